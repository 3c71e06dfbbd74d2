#!/bin/sh
# An openaudio-s1-mini-shaped checkpoint directory for planning only (`voxfit plan`, `voxfit cluster`):
# S1-mini's published config.json, sparse model.pth / codec.pth of the published sizes (no disk used,
# no weights: it cannot speak), a placeholder tokenizer. voxfit sizes a Fish model from config.json and
# codec.pth's size alone, so this plans exactly as the real download does.
set -eu
dir=${1:?usage: make-s1-mini-shape.sh DIR}
mkdir -p "$dir"
cp "$(dirname "$0")/openaudio-s1-mini-config.json" "$dir/config.json"
truncate -s 1400M "$dir/model.pth"
truncate -s 1600M "$dir/codec.pth"
echo "IQ== 0" > "$dir/tokenizer.tiktoken"
echo "{}" > "$dir/special_tokens.json"
echo "$dir: S1-mini-shaped, for planning only"

"""A Fish Speech model directory is data: nothing in it chooses code, and nothing in it is trusted unchecked.

* codec.yaml may only change numeric hyperparameters of fish-speech's packaged
  codec config: every class-choosing or code-running construct is refused with
  one line, before anything is built, and the payload never runs.
* config.json's values, model.pth and codec.pth must agree with each other
  both ways (missing, unexpected, mis-shaped weights) before anything speaks.
* Small files are read bounded.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from fish_helpers import load
from helpers import resolve, voxfit_cli
from voxfit.engines.fish import codec as fish_codec
from voxfit.errors import ModelError

PAYLOAD = "PAYLOAD"  # replaced by the payload file's path in each yaml below

# Fed to hydra's instantiate as voxfit used to (OmegaConf.load + instantiate), the path-write-text,
# shutil-copyfile, builtins-open, nested-in-quantizer, nested-in-general-config, args-alongside-numbers
# and oc-create-resolver yamls each write their payload file; the others steer instantiate or read the
# environment. Each entry: (yaml, the key the refusal must name).

HOSTILE_YAMLS = {
    "path-write-text": ("""
_target_: pathlib.Path.write_text
_args_:
  - _target_: pathlib.Path
    _args_: [PAYLOAD]
  - "echo pwned"
""", "_target_"),
    "shutil-copyfile": ("""
_target_: shutil.copyfile
src: /etc/hostname
dst: PAYLOAD
""", "_target_"),
    "builtins-open": ("""
_target_: builtins.open
file: PAYLOAD
mode: w
""", "_target_"),
    "nested-in-quantizer": ("""
encoder_dim: 4
quantizer:
  n_codebooks: 3
  post_module:
    config:
      _target_: builtins.open
      file: PAYLOAD
      mode: w
""", "quantizer.post_module.config._target_"),
    "nested-in-general-config": ("""
transformer_general_config:
  block_size: 256
  rope_base:
    _target_: pathlib.Path.touch
    _args_:
      - _target_: pathlib.Path
        _args_: [PAYLOAD]
""", "transformer_general_config.rope_base"),
    "args-alongside-numbers": ("""
encoder_dim: 4
_args_:
  - _target_: builtins.open
    file: PAYLOAD
    mode: w
""", "_args_"),
    "partial-flag": ("""
quantizer:
  _partial_: true
""", "quantizer._partial_"),
    "recursive-off": ("""
_recursive_: false
""", "_recursive_"),
    "convert-all": ("""
_convert_: all
""", "_convert_"),
    "oc-create-resolver": ("""
decoder_dim: "${oc.create:'{_target_: builtins.open, file: PAYLOAD, mode: w}'}"
""", "decoder_dim"),
    "oc-env-interpolation": ("""
quantizer:
  post_module:
    config:
      dim: ${oc.env:HOME}
""", "quantizer.post_module.config.dim"),
    "interpolated-key": ("""
"${oc.create:{_target_: builtins.open, file: PAYLOAD, mode: w}}": 1
""", "${oc.create"),
    "python-tag": ("""
encoder_dim: !!python/object/apply:os.system ["touch PAYLOAD"]
""", "codec.yaml"),
}


def _hostile_copy(fish_checkpoint, tmp_path, yaml_text):
    directory = shutil.copytree(fish_checkpoint, tmp_path / "hostile")
    payload = tmp_path / "payload.txt"
    (directory / "codec.yaml").write_text(yaml_text.replace(PAYLOAD, str(payload)))
    return directory, payload


def _assert_one_line(err, *parts):
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


@pytest.mark.parametrize("name", sorted(HOSTILE_YAMLS))
class TestHostileCodecYaml:
    """Each yaml would run its payload through hydra's instantiate; each is refused, and nothing is written."""

    def test_reading_the_model_refuses_it(self, fish_checkpoint, tmp_path, name):
        text, key = HOSTILE_YAMLS[name]
        directory, payload = _hostile_copy(fish_checkpoint, tmp_path, text)
        with pytest.raises(ModelError) as err:
            resolve(str(directory))  # what `voxfit plan` / `voxfit run` read first
        _assert_one_line(err, str(directory / "codec.yaml"), key)
        assert not payload.exists()

    def test_the_codec_loader_refuses_it_on_its_own(self, fish_checkpoint, tmp_path, name):
        text, key = HOSTILE_YAMLS[name]
        directory, payload = _hostile_copy(fish_checkpoint, tmp_path, text)
        with pytest.raises(ModelError) as err:
            fish_codec.load_codec(directory, "cpu", torch.float32)  # the guard holds without the spec check
        _assert_one_line(err, str(directory / "codec.yaml"), key)
        assert not payload.exists()


def _assert_cli_refused(result, out, payload, *parts):
    err = result.stderr.decode().strip()
    assert result.returncode != 0, err
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    assert not out.exists()
    assert payload is None or not payload.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["path-write-text", "nested-in-quantizer", "oc-create-resolver"])
def test_cli_run_refuses_a_hostile_codec_yaml(fish_checkpoint, tmp_path, name):
    text, key = HOSTILE_YAMLS[name]
    directory, payload = _hostile_copy(fish_checkpoint, tmp_path, text)
    out = tmp_path / "out.wav"
    result = voxfit_cli("run", "Hello.", "--model", str(directory), "-o", str(out), env={"VOXFIT_DEVICE": "cpu"})
    _assert_cli_refused(result, out, payload, "codec.yaml", key)


@pytest.mark.slow
def test_cli_run_refuses_a_hostile_model_named_in_dot_env(fish_checkpoint, tmp_path):
    text, key = HOSTILE_YAMLS["builtins-open"]
    directory, payload = _hostile_copy(fish_checkpoint, tmp_path, text)
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text(f"VOXFIT_MODEL={directory}\nVOXFIT_DEVICE=cpu\n")
    out = work / "out.wav"
    result = voxfit_cli("run", "Hello.", "-o", "out.wav", cwd=work)
    _assert_cli_refused(result, out, payload, "codec.yaml", key)


def test_a_benign_override_still_loads_and_speaks(fish_checkpoint, tmp_path):
    """The tiny checkpoint's own codec.yaml is numbers only; written by hand (comments, 1e-5) it still loads."""
    import yaml

    overrides = yaml.safe_load((fish_checkpoint / "codec.yaml").read_text())
    assert "_target_" not in (fish_checkpoint / "codec.yaml").read_text()
    directory = shutil.copytree(fish_checkpoint, tmp_path / "benign")
    text = "# shrunk for tests\n" + yaml.safe_dump(overrides) + "transformer_general_config:\n  norm_eps: 1e-5\n"
    text = text.replace("transformer_general_config:\n  block_size: 256\n", "")
    text += "  block_size: 256\n"
    (directory / "codec.yaml").write_text(text)
    engine = load(directory)
    try:
        assert fish_codec.n_codebooks(engine.codec) == 4  # 1 semantic + the override's 3 residual
        assert next(engine.synthesize("Still speaks.")).tokens > 0
    finally:
        engine.close()


@pytest.mark.parametrize("text,key", [
    ("encoder_dim: 4\nnot_a_codec_key: 1\n", "not_a_codec_key"),
    ("encoder_dim: -4\n", "encoder_dim"),
    ("encoder_dim: 100000000\n", "encoder_dim"),
    ("encoder_dim: true\n", "encoder_dim"),
    ("encoder_rates: [2, 4, [8]]\n", "encoder_rates[2]"),
    ("quantizer: 3\n", "quantizer"),
    ("transformer_general_config:\n  dropout_rate: .nan\n", "transformer_general_config.dropout_rate"),
    ("- a list\n", "the document"),
])
def test_an_out_of_policy_value_is_refused_with_its_key(fish_checkpoint, tmp_path, text, key):
    directory, _ = _hostile_copy(fish_checkpoint, tmp_path, text)
    with pytest.raises(ModelError) as err:
        resolve(str(directory))
    _assert_one_line(err, "codec.yaml", key)


# -- config.json against model.pth, codec.pth against the codec config -----------------------------


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes,key", [
    ({"n_layer": -3}, "n_layer"),
    ({"dim": 0}, "dim"),
    ({"n_head": "2"}, "n_head"),
    ({"n_layer": True}, "n_layer"),
    ({"n_local_heads": 3}, "n_local_heads"),  # 3 does not divide n_head 2
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    ({"rope_base": -1}, "rope_base"),
    ({"surprise": 1}, "surprise"),
])
def test_config_values_are_validated_when_the_spec_is_read(fish_checkpoint, tmp_path, changes, key):
    directory = shutil.copytree(fish_checkpoint, tmp_path / "bad-config")
    _edit_config(directory, **changes)
    with pytest.raises(ModelError) as err:
        resolve(str(directory))
    _assert_one_line(err, str(directory / "config.json"), key)


@pytest.mark.parametrize("changes,expected", [
    ({"n_layer": 1}, "model.pth does not match config.json: 7 unexpected weights (layers.1."),
    ({"n_layer": 3}, "model.pth does not match config.json: 7 missing weights (layers.2."),
    ({"dim": 64}, "shape mismatches (embeddings.weight "),
    ({"n_fast_layer": 2}, "missing weights (fast_layers.1."),
])
def test_a_config_that_does_not_match_its_weights_fails_before_synthesis(fish_checkpoint, tmp_path, changes,
                                                                          expected):
    directory = shutil.copytree(fish_checkpoint, tmp_path / "mismatch")
    _edit_config(directory, **changes)
    with pytest.raises(ModelError) as err:
        load(directory)
    _assert_one_line(err, expected)


def _edit_codec(directory, edit):
    weights = torch.load(directory / "codec.pth", weights_only=True)
    edit(weights)
    torch.save(weights, directory / "codec.pth")


@pytest.mark.parametrize("edit,expected", [
    (lambda w: w.update(extra=torch.zeros(3)), "codec.pth does not match the codec config codec.yaml: "
                                                "1 unexpected weights (extra)"),
    (lambda w: w.pop(next(iter(w))), "1 missing weights ("),
    (lambda w: w.update({k: torch.zeros(2, *v.shape) for k, v in list(w.items())[:2]}), "2 shape mismatches ("),
], ids=["extra", "missing", "shapes"])
def test_a_codec_pth_that_does_not_match_its_config_fails_to_load(fish_checkpoint, tmp_path, edit, expected):
    directory = shutil.copytree(fish_checkpoint, tmp_path / "codec-mismatch")
    _edit_codec(directory, edit)
    with pytest.raises(ModelError) as err:
        load(directory)
    _assert_one_line(err, expected)


@pytest.mark.slow
@pytest.mark.parametrize("damage,expected", [
    (lambda d: _edit_config(d, n_layer=1), "model.pth does not match config.json: 7 unexpected weights"),
    (lambda d: _edit_config(d, n_layer=-3), "n_layer = -3 must be a positive integer"),
    (lambda d: _edit_codec(d, lambda w: w.update(extra=torch.zeros(3))), "1 unexpected weights (extra)"),
], ids=["n_layer-1-vs-2", "negative-n_layer", "codec-extra"])
def test_cli_run_refuses_a_mismatched_checkpoint(fish_checkpoint, tmp_path, damage, expected):
    directory = shutil.copytree(fish_checkpoint, tmp_path / "mismatch")
    damage(directory)
    out = tmp_path / "out.wav"
    result = voxfit_cli("run", "Hello.", "--model", str(directory), "-o", str(out), env={"VOXFIT_DEVICE": "cpu"})
    _assert_cli_refused(result, out, None, expected)


# -- bounded reads -----------------------------------------------------------------------------------


def _sparse(path, size=9 * 2**20):
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


@pytest.mark.parametrize("damage,expected", [
    (lambda d: _sparse(d / "config.json"), "config.json is corrupt or not a Fish Speech config (FileTooLarge"),
    (lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00garbage" * 100), "config.json is corrupt"),
    (lambda d: _sparse(d / "special_tokens.json"), "special_tokens.json is corrupt (FileTooLarge"),
    (lambda d: (d / "special_tokens.json").write_bytes(os.urandom(256)), "special_tokens.json is corrupt"),
    (lambda d: _sparse(d / "codec.yaml"), "codec.yaml cannot be read (FileTooLarge"),
    (lambda d: (d / "codec.yaml").write_bytes(b"\x89PNG\x00\xff" * 50), "codec.yaml"),
    (lambda d: (d / "config.json").write_text("[" * 200_000), "config.json is corrupt or not a Fish Speech config (RecursionError"),
    (lambda d: (d / "special_tokens.json").write_text("[" * 200_000), "special_tokens.json is corrupt (Recursion"),
    (lambda d: (d / "codec.yaml").write_text("[" * 200_000), "codec.yaml is not a plain YAML mapping (Recursion"),
    (lambda d: _sparse(d / "tokenizer.tiktoken", 65 * 2**20), "tokenizer.tiktoken is 65 MiB"),
], ids=["huge-config", "binary-config", "huge-special-tokens", "binary-special-tokens", "huge-codec-yaml",
        "binary-codec-yaml", "deep-config", "deep-special-tokens", "deep-codec-yaml", "huge-tokenizer"])
def test_small_files_are_read_bounded_and_garbage_is_one_line(fish_checkpoint, tmp_path, damage, expected):
    directory = shutil.copytree(fish_checkpoint, tmp_path / "garbage")
    damage(directory)
    with pytest.raises(ModelError) as err:
        resolve(str(directory))
    _assert_one_line(err, expected)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("name", ["config.json", "special_tokens.json", "codec.yaml"])
def test_a_symlink_to_an_endless_device_is_refused(fish_checkpoint, tmp_path, name):
    directory = shutil.copytree(fish_checkpoint, tmp_path / "endless")
    (directory / name).unlink()
    (directory / name).symlink_to("/dev/zero")
    with pytest.raises(ModelError) as err:
        resolve(str(directory))
    _assert_one_line(err, name)

"""Fish Speech checkpoints are sized from config.json alone, before anything is loaded."""

import json
import os

import pytest
from helpers import resolve
from voxfit.engines.fish.spec import kv_cache_bytes, llm_parameter_count, parameters_read_per_token
from voxfit.engines.fish.tiny import s1_mini_llm_config
from voxfit.errors import ModelError

# The shape published for openaudio-s1-mini (dual AR, 28 + 4 layers, dim 1024).
S1_MINI = s1_mini_llm_config()


def write_checkpoint(directory, config=S1_MINI, codec_bytes=1600 * 2**20, model_bytes=1400 * 2**20):
    """A checkpoint directory in the published layout; the large files are sparse (no disk used)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    for name, size in (("codec.pth", codec_bytes), ("model.pth", model_bytes)):
        with open(directory / name, "wb") as f:
            f.truncate(size)
    (directory / "tokenizer.tiktoken").write_text("IQ== 0\n")
    (directory / "special_tokens.json").write_text("{}")
    return directory


def test_s1_mini_shape_is_sized_without_loading(tmp_path):
    spec = resolve(str(write_checkpoint(tmp_path / "openaudio-s1-mini")))
    assert spec.family == "fish" and spec.sample_rate == 44100
    llm = spec.properties["llm_parameters"]
    assert 0.5e9 < llm < 0.8e9  # the notes' range for S1-mini's LLM
    assert spec.properties["codec_parameters"] == 1600 * 2**20 // 4
    fp16, fp32, int8 = spec.memory["fp16"], spec.memory["fp32"], spec.memory["int8"]
    assert fp16.weights_bytes == 2 * llm and fp32.weights_bytes == 4 * llm
    # KV cache: 28 layers x (k, v) x 8192 positions x 8 heads x 128 dims x 2 bytes, plus the tiny fast caches.
    assert fp16.kv_cache_bytes == 28 * 2 * 8192 * 8 * 128 * 2 + 4 * 2 * 10 * 8 * 64 * 2
    assert int8.total_bytes < fp16.total_bytes < fp32.total_bytes
    assert 3 * 2**30 < fp16.total_bytes < 6 * 2**30  # the field notes' 4.5-6 GB includes the CUDA context


def test_defaults_follow_fish_speechs_post_init():
    minimal = {"model_type": "dual_ar", "vocab_size": 100, "n_layer": 1, "n_head": 2, "dim": 64}
    explicit = dict(minimal, n_local_heads=2, head_dim=64, intermediate_size=256, codebook_size=160,
                    num_codebooks=4, n_fast_layer=4, fast_dim=64, fast_n_head=2, fast_n_local_heads=2,
                    fast_head_dim=64, fast_intermediate_size=256, tie_word_embeddings=True, max_seq_len=2048)
    assert llm_parameter_count(minimal) == llm_parameter_count(explicit)
    assert kv_cache_bytes(minimal, 2) == kv_cache_bytes(explicit, 2)


def test_per_token_reads_count_the_fast_transformer_once_per_codebook():
    ten = parameters_read_per_token(S1_MINI)
    five = parameters_read_per_token(dict(S1_MINI, num_codebooks=5))
    assert ten > five and (ten - five) % 5 == 0


def test_incomplete_checkpoint_names_what_is_missing(tmp_path):
    directory = write_checkpoint(tmp_path / "ckpt")
    os.remove(directory / "tokenizer.tiktoken")
    with pytest.raises(ModelError, match="incomplete: missing tokenizer.tiktoken"):
        resolve(str(directory))


@pytest.mark.parametrize("content", ["{not json", json.dumps({"model_type": "dual_ar"}), json.dumps([1, 2]),
                                     json.dumps(dict(S1_MINI, model_type="mamba"))])
def test_corrupt_config_is_a_model_error(tmp_path, content):
    directory = write_checkpoint(tmp_path / "ckpt")
    (directory / "config.json").write_text(content)
    with pytest.raises(ModelError, match="corrupt or not a Fish Speech config"):
        resolve(str(directory))


def test_truncated_weights_are_refused(tmp_path):
    directory = write_checkpoint(tmp_path / "ckpt", model_bytes=10)
    with pytest.raises(ModelError, match="model.pth is truncated"):
        resolve(str(directory))

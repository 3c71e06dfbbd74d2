"""The config-only ModelSpec against the real thing: fish-speech's own model, built and loaded."""

import json

import pytest
import torch
from helpers import resolve
from voxfit.engines.fish.spec import kv_cache_bytes, llm_parameter_count
from voxfit.engines.fish.tiny import s1_mini_llm_config


def _cache_bytes(model):
    return sum(
        buf.numel() * buf.element_size()
        for name, buf in model.named_buffers()
        if name.endswith(("k_cache", "v_cache"))
    )


@pytest.mark.parametrize("dtype,nbytes", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_tiny_checkpoint_spec_equals_the_loaded_model(fish_checkpoint, dtype, nbytes):
    from voxfit.engines.fish.engine import import_fish_stack

    llama = import_fish_stack()["llama"]
    spec = resolve(str(fish_checkpoint))
    model = llama.BaseTransformer.from_pretrained(str(fish_checkpoint), load_weights=True).to(dtype=dtype)
    assert spec.properties["llm_parameters"] == sum(p.numel() for p in model.parameters())
    model.setup_caches(max_batch_size=1, max_seq_len=model.config.max_seq_len, dtype=dtype)
    config = json.loads((fish_checkpoint / "config.json").read_text())
    assert _cache_bytes(model) == kv_cache_bytes(config, nbytes)
    precision = "fp32" if nbytes == 4 else "bf16"
    assert spec.memory[precision].kv_cache_bytes == _cache_bytes(model)
    assert spec.memory[precision].weights_bytes == sum(p.numel() * p.element_size() for p in model.parameters())


def test_s1_mini_shape_matches_fish_speech_on_the_meta_device():
    """Full size, no memory: the published S1-mini shape built by fish-speech's class on `meta`."""
    import base64
    import tempfile
    from pathlib import Path

    from voxfit.engines.fish.engine import import_fish_stack

    llama = import_fish_stack()["llama"]
    from fish_speech.tokenizer import FishTokenizer

    config = s1_mini_llm_config()
    with tempfile.TemporaryDirectory() as tmp:
        bpe = Path(tmp) / "t.tiktoken"
        bpe.write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
        tokenizer = FishTokenizer(str(bpe), special_tokens=[f"<|semantic:{i}|>" for i in range(4096)])
    with torch.device("meta"):
        model = llama.DualARTransformer(llama.DualARModelArgs(**config), tokenizer=tokenizer)
        model.setup_caches(max_batch_size=1, max_seq_len=config["max_seq_len"], dtype=torch.bfloat16)
    assert llm_parameter_count(config) == sum(p.numel() for p in model.parameters())
    assert kv_cache_bytes(config, 2) == _cache_bytes(model)


def test_codec_size_from_the_file_covers_the_real_codec(fish_checkpoint):
    from voxfit.engines.fish.codec import load_codec

    spec = resolve(str(fish_checkpoint))
    codec = load_codec(fish_checkpoint, "cpu", torch.float32)
    actual = sum(p.numel() for p in codec.parameters())
    # codec.pth also holds persistent buffers (the transformers' causal masks), so the estimate is a bit high
    assert actual <= spec.properties["codec_parameters"] <= 1.3 * actual

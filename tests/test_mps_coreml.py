"""The Core ML codec path: conversion runs here when torch, fish_speech and coremltools are installed.

Running the converted model needs macOS (coremltools' runtime exists only
there); that test is skipped elsewhere with the reason, never faked. The
cache-path logic needs nothing heavy and always runs.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from voxfit.util.files import file_sha256
from voxfit_mps import coreml_codec


def test_cache_path_is_keyed_by_the_codec_hash_under_the_cache_dir(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"codec weights one")
    b.write_bytes(b"codec weights two")
    pa = coreml_codec.cache_path(tmp_path / "cache", file_sha256(None, a), 1024)
    pb = coreml_codec.cache_path(tmp_path / "cache", file_sha256(None, b), 1024)
    assert pa != pb and pa.parent == tmp_path / "cache" / "mps" / "coreml-codec"
    assert pa.name.endswith("-1024f-fp16.mlpackage")
    assert file_sha256(None, a) == file_sha256(None, a)


def _heavy():
    for name in ("torch", "fish_speech", "coremltools", "hydra"):
        pytest.importorskip(name, reason=f"{name} is not installed: the Core ML conversion test needs "
                                         "torch, fish-speech and coremltools (pip install 'voxfit-mps[coreml]')")
    # descript-audiotools imports torchaudio at top level; the core's guard provides the same
    # placeholder the fish engine uses when the real one cannot load (FISH_SPEECH_NOTES).
    from voxfit.engines.fish.torchaudio_guard import ensure_torchaudio_importable

    ensure_torchaudio_importable()


def tiny_codec():
    """fish-speech's own modded DAC codec, built from its packaged yaml with tiny dimensions."""
    import fish_speech
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(list(fish_speech.__path__)[0]) / "configs" / "modded_dac_vq.yaml")
    cfg.encoder_dim, cfg.decoder_dim = 4, 64
    cfg.encoder_transformer_layers, cfg.decoder_transformer_layers = [0, 0, 0, 1], [1, 0, 0, 0]
    cfg.transformer_general_config.block_size = 256
    q = cfg.quantizer
    q.input_dim, q.n_codebooks, q.codebook_size, q.semantic_codebook_size = 64, 3, 1024, 4096
    for mod in ("pre_module", "post_module"):
        q[mod].input_dim = 64
        c = q[mod].config
        c.block_size, c.n_layer, c.n_head, c.dim, c.intermediate_size = 256, 1, 1, 64, 128
    torch.manual_seed(0)
    return instantiate(cfg)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    _heavy()
    import torch

    tmp = tmp_path_factory.mktemp("coreml")
    codec = tiny_codec()
    codec_file = tmp / "codec.pth"
    torch.save(codec.state_dict(), codec_file)
    result = coreml_codec.load_or_convert(codec, codec_file, tmp / "cache", frames=32)
    return codec, codec_file, tmp, result


def test_decoder_module_matches_fish_speechs_decode_and_right_padding_is_exact(converted):
    import torch

    codec, _, _, _ = converted
    decoder = coreml_codec.decoder_module(codec)
    codes = torch.randint(0, 1024, (1, 4, 13))
    with torch.no_grad():
        ours = decoder(codes)
        theirs, _ = codec.decode(codes, torch.tensor([13]))
        padded = decoder(torch.cat([codes, torch.zeros(1, 4, 19, dtype=codes.dtype)], -1))[..., : ours.shape[-1]]
    assert ours.shape == theirs.shape == (1, 1, 13 * int(codec.frame_length))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours, padded, atol=1e-5)


def test_conversion_writes_an_fp16_ml_program_and_caches_it(converted):
    import coremltools as ct

    codec, codec_file, tmp, result = converted
    assert result.converted_now and result.path.is_dir() and result.path.suffix == ".mlpackage"
    assert result.path == coreml_codec.cache_path(tmp / "cache", file_sha256(tmp / "cache", codec_file), 32)
    spec = ct.utils.load_spec(str(result.path))
    assert spec.WhichOneof("Type") == "mlProgram"
    [inp] = spec.description.input
    assert list(inp.type.multiArrayType.shape) == [1, 4, 32]
    assert list(spec.description.output[0].type.multiArrayType.shape) == [1, 1, 32 * int(codec.frame_length)]
    ops = str(spec.mlProgram)
    assert "fp16" in ops  # weights and compute in half precision
    mtime = result.path.stat().st_mtime
    again = coreml_codec.load_or_convert(codec, codec_file, tmp / "cache", frames=32)
    assert not again.converted_now and again.path == result.path and result.path.stat().st_mtime == mtime
    assert not list((tmp / "cache" / "mps" / "coreml-codec").glob(".converting-*"))  # staging cleaned up


@pytest.mark.skipif(platform.system() != "Darwin",
                    reason="running a Core ML model needs macOS: coremltools' runtime (libcoremlpython) "
                           "is not built for other systems; conversion is tested above")
def test_converted_decoder_runs_on_macos_like_torch(converted):
    import numpy as np
    import torch

    codec, _, _, result = converted
    codes = np.random.default_rng(0).integers(0, 1024, size=(4, 50))  # two windows of 32 frames
    ours = coreml_codec.CoreMLDecoder(result, "CPU_ONLY")(codes)
    with torch.no_grad():
        ref = coreml_codec.decoder_module(codec)(torch.from_numpy(codes[None, :, :32]).long()).numpy().reshape(-1)
    assert ours.shape == (50 * int(codec.frame_length),)
    assert np.abs(ours[: ref.size] - ref).max() < 2e-2  # fp16

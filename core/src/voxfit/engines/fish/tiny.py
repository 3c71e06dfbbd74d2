"""Fish Speech checkpoints with random weights, built with fish-speech's own classes.

:func:`build_tiny_checkpoint` writes a complete checkpoint directory in the
published layout (``config.json``, ``model.pth``, ``tokenizer.tiktoken``,
``special_tokens.json``, ``codec.pth``) that voxfit then loads through the real
loaders. It is structurally real — fish-speech's ``DualARTransformer`` saved
by its own ``save_pretrained``, the codec built from its packaged
``modded_dac_vq.yaml`` — only small (about 1 M + 0.6 M parameters, under
8 MB) and untrained, so it speaks noise. The shrunk codec shape is written to
``codec.yaml`` beside ``codec.pth`` as numeric overrides of the packaged
yaml, the voxfit extension the loader reads (published checkpoints have none).

:func:`s1_mini_llm_config` gives an LLM config with the shape published for
openaudio-s1-mini, for benchmarks that need a realistic size with random
weights (``build_tiny_checkpoint(dir, llm_config=s1_mini_llm_config(),
codec="full")``; about 2.3 GB fp32 on disk).

Everything heavy is imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, Optional

N_SEMANTIC = 4096  # S1 layout: 4096 semantic tokens == the codec's semantic codebook
N_RESIDUAL = 3  # residual codebooks of the tiny codec (the real one has 9)
TINY_BLOCK = 256  # the codec transformers' block size (bounds frames per decode call)


def tiny_llm_config() -> dict[str, Any]:
    """A 2 + 1 layer dual-AR transformer, dim 32 (vocab_size is filled in from the tokenizer)."""
    return dict(
        model_type="dual_ar",
        n_layer=2,
        n_head=2,
        n_local_heads=1,  # grouped-query attention like the real model
        dim=32,
        head_dim=16,
        intermediate_size=64,
        max_seq_len=2304,  # generate_long refuses prompts longer than max_seq_len - 2048
        codebook_size=N_SEMANTIC,
        num_codebooks=1 + N_RESIDUAL,
        n_fast_layer=1,
        fast_dim=32,
        fast_n_head=2,
        fast_n_local_heads=1,
        fast_head_dim=16,
        fast_intermediate_size=64,
        tie_word_embeddings=True,
        use_gradient_checkpointing=True,  # the published config ships it on
    )


def s1_mini_llm_config() -> dict[str, Any]:
    """The LLM shape published for openaudio-s1-mini (dual AR, 28 + 4 layers, dim 1024)."""
    return dict(
        model_type="dual_ar", vocab_size=155776, n_layer=28, n_head=16, n_local_heads=8, head_dim=128, dim=1024,
        intermediate_size=3072, max_seq_len=8192, codebook_size=4096, num_codebooks=10, n_fast_layer=4,
        fast_dim=1024, fast_n_head=16, fast_n_local_heads=8, fast_head_dim=64, fast_intermediate_size=3072,
        tie_word_embeddings=True, attention_qk_norm=True, use_gradient_checkpointing=True,
    )


def tiny_codec_overrides() -> dict[str, Any]:
    """What a tiny checkpoint's codec.yaml says: fish-speech's packaged codec shrunk to latent 64,
    3 residual codebooks, block 256. Numbers only: a codec.yaml never names a class."""
    transformer = dict(block_size=TINY_BLOCK, n_layer=1, n_head=1, dim=64, intermediate_size=128)
    module = dict(input_dim=64, config=transformer)  # the packaged yaml shares one anchor: set both
    return dict(
        encoder_dim=4,  # latent = 4 * 2**4 = 64
        decoder_dim=64,
        encoder_transformer_layers=[0, 0, 0, 1],
        decoder_transformer_layers=[1, 0, 0, 0],
        transformer_general_config=dict(block_size=TINY_BLOCK),  # its bool causal mask (block**2) is saved
        quantizer=dict(
            input_dim=64,
            n_codebooks=N_RESIDUAL,
            codebook_size=1024,  # residual codes are sampled from logits[:, :, :1024] by fish-speech
            semantic_codebook_size=N_SEMANTIC,
            pre_module=module,
            post_module=dict(input_dim=64, config=dict(transformer)),
        ),
    )


def _build_tokenizer(workdir: Path) -> Any:
    """A byte-level BPE (256 ranks) plus fish-speech's special and semantic tokens."""
    from fish_speech.tokenizer import ALL_SPECIAL_TOKENS, SEMANTIC_TOKEN_TEMPLATE, FishTokenizer

    bpe = workdir / "bootstrap.tiktoken"
    bpe.write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
    specials = [t for t in ALL_SPECIAL_TOKENS if not t.startswith("<|semantic:")]
    specials += [SEMANTIC_TOKEN_TEMPLATE.format(i=i) for i in range(N_SEMANTIC)]
    return FishTokenizer(str(bpe), special_tokens=specials)


def build_tiny_checkpoint(
    directory: Path,
    seed: int = 0,
    *,
    llm_config: Optional[dict[str, Any]] = None,
    codec: Literal["tiny", "full"] = "tiny",
) -> Path:
    """Write a random-weight checkpoint in the published layout into ``directory``; return it."""
    import torch

    from voxfit.engines.fish.engine import import_fish_stack

    import_fish_stack()  # the torchaudio placeholder must be in place before fish_speech's codec imports
    from fish_speech.models.text2semantic.llama import DualARModelArgs, DualARTransformer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as work:
        tokenizer = _build_tokenizer(Path(work))
        config = dict(llm_config or tiny_llm_config())
        config.setdefault("vocab_size", tokenizer.vocab_size + tokenizer.num_special_tokens)
        model = DualARTransformer(DualARModelArgs(**config), tokenizer=tokenizer)
        model.save_pretrained(str(directory))  # config.json, model.pth, tokenizer.tiktoken, special_tokens.json
        del model
    if codec == "tiny":
        import yaml

        (directory / "codec.yaml").write_text(yaml.safe_dump(tiny_codec_overrides(), sort_keys=False))
    else:
        (directory / "codec.yaml").unlink(missing_ok=True)
    from voxfit.engines.fish.codec import build_codec

    codec_model, _ = build_codec(directory)  # the loader's own path: packaged yaml + validated codec.yaml
    torch.save(codec_model.state_dict(), directory / "codec.pth")
    return directory


def write_reference_wav(path: Path, seconds: float = 1.5, sample_rate: int = 44100, channels: int = 1) -> Path:
    """A short voiced-looking clip (a 220 Hz tone with harmonics and a little noise) for cloning tests."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 440 * t)
    wave += 0.02 * np.random.default_rng(0).standard_normal(t.size)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    sf.write(str(path), data.astype(np.float32), sample_rate)
    return Path(path)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """A fresh copy (tests corrupt copies, never the shared build)."""
    shutil.copytree(src, dst)
    return dst

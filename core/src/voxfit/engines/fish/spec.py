"""Fish Speech / OpenAudio S1 checkpoints, sized from ``config.json`` alone.

The published layout is a directory with ``config.json``, ``model.pth``,
``tokenizer.tiktoken``, ``special_tokens.json`` and ``codec.pth``. Nothing is
loaded here (no torch: ``voxfit plan`` stays light); the parameter count is
computed from the config with the same arithmetic as fish-speech's
``DualARTransformer`` / ``NaiveTransformer`` constructors, and a test holds it
equal to the real model's ``numel()`` sum.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from voxfit.sdk import MemoryEstimate, ModelError, ModelSpec, read_small_text

REQUIRED_FILES = ("config.json", "model.pth", "tokenizer.tiktoken", "special_tokens.json", "codec.pth")
CODEC_SAMPLE_RATE = 44100  # modded_dac_vq.yaml, the codec every S1 checkpoint ships
CODEC_HOP = 2048  # samples per codec frame: one semantic token speaks 2048 samples
TOKENIZER_LIMIT = 64 * 2**20  # S1-mini's tokenizer.tiktoken is about 2 MiB
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# Fixed working allowance on top of 10% of the weights: activations, logits,
# sampling buffers and allocator slack seen at batch 1.
_BUFFER_FIXED = 128 * 2**20
_BUFFER_SHARE = 0.10


def _find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


def _normalise(raw: dict[str, Any]) -> dict[str, Any]:
    """Apply the defaults of fish-speech's BaseModelArgs / DualARModelArgs.__post_init__."""
    c = dict(raw)
    c.setdefault("n_local_heads", -1)
    if c["n_local_heads"] == -1:
        c["n_local_heads"] = c["n_head"]
    if c.get("intermediate_size") is None:
        c["intermediate_size"] = _find_multiple(int(2 * 4 * c["dim"] / 3), 256)
    c.setdefault("head_dim", 64)  # BaseModelArgs' default; only an explicit null means dim // n_head
    if c["head_dim"] is None:
        c["head_dim"] = c["dim"] // c["n_head"]
    c.setdefault("tie_word_embeddings", True)
    c.setdefault("num_codebooks", 4)
    c.setdefault("codebook_size", 160)
    c.setdefault("max_seq_len", 2048)
    if c.get("model_type") == "dual_ar":
        c["n_fast_layer"] = c.get("n_fast_layer", 4)
        c["fast_dim"] = c.get("fast_dim") or c["dim"]
        c["fast_n_head"] = c.get("fast_n_head") or c["n_head"]
        c["fast_n_local_heads"] = c.get("fast_n_local_heads") or c["n_local_heads"]
        c["fast_head_dim"] = c.get("fast_head_dim") or c["head_dim"]
        c["fast_intermediate_size"] = c.get("fast_intermediate_size") or c["intermediate_size"]
        for key in ("attention_qkv_bias", "attention_qk_norm", "attention_o_bias"):
            if c.get(f"fast_{key}") is None:
                c[f"fast_{key}"] = c.get(key, False)
    return c


def _block_params(dim: int, n_head: int, n_local: int, head_dim: int, ffn: int, qkv_bias: bool, o_bias: bool,
                  qk_norm: bool) -> int:
    qkv_out = (n_head + 2 * n_local) * head_dim
    attention = dim * qkv_out + (qkv_out if qkv_bias else 0) + n_head * head_dim * dim + (dim if o_bias else 0)
    norms = 2 * dim + (2 * head_dim if qk_norm else 0)
    return attention + 3 * dim * ffn + norms


def llm_parameter_count(config: dict[str, Any]) -> int:
    """Parameters of the text-to-semantic transformer, exactly as fish-speech builds it."""
    c = _normalise(config)
    dim = c["dim"]
    total = c["vocab_size"] * dim + c["codebook_size"] * c["num_codebooks"] * dim + dim  # embeddings + final norm
    total += c["n_layer"] * _block_params(
        dim, c["n_head"], c["n_local_heads"], c["head_dim"], c["intermediate_size"],
        c.get("attention_qkv_bias", False), c.get("attention_o_bias", False), c.get("attention_qk_norm", False),
    )
    if not c["tie_word_embeddings"]:
        total += dim * c["vocab_size"]
    if c.get("model_type") == "naive":
        total += dim + dim * c["codebook_size"] * c["num_codebooks"]  # codebook_norm + codebook_output
    elif c.get("model_type") == "dual_ar":
        fd = c["fast_dim"]
        if fd != dim:
            total += dim * fd + fd  # fast_project_in (with bias)
        total += c["codebook_size"] * fd + fd + fd * c["codebook_size"]  # fast embeddings, norm, output
        total += c["n_fast_layer"] * _block_params(
            fd, c["fast_n_head"], c["fast_n_local_heads"], c["fast_head_dim"], c["fast_intermediate_size"],
            c["fast_attention_qkv_bias"], c["fast_attention_o_bias"], c["fast_attention_qk_norm"],
        )
    return total


def parameters_read_per_token(config: dict[str, Any]) -> int:
    """Weights one generated semantic token reads: the memory-bandwidth roofline's denominator.

    Every slow layer and the vocabulary head once; the fast transformer once
    per codebook. Embedding lookups read one row and are left out.
    """
    c = _normalise(config)
    dim = c["dim"]
    slow = c["n_layer"] * _block_params(
        dim, c["n_head"], c["n_local_heads"], c["head_dim"], c["intermediate_size"],
        c.get("attention_qkv_bias", False), c.get("attention_o_bias", False), c.get("attention_qk_norm", False),
    )
    head = dim * c["vocab_size"]
    if c.get("model_type") != "dual_ar":
        return slow + head + dim * c["codebook_size"] * c["num_codebooks"]
    fd = c["fast_dim"]
    fast = c["n_fast_layer"] * _block_params(
        fd, c["fast_n_head"], c["fast_n_local_heads"], c["fast_head_dim"], c["fast_intermediate_size"],
        c["fast_attention_qkv_bias"], c["fast_attention_o_bias"], c["fast_attention_qk_norm"],
    ) + fd * c["codebook_size"]
    return slow + head + c["num_codebooks"] * fast


def kv_cache_bytes(config: dict[str, Any], dtype_bytes: int, max_seq_len: Optional[int] = None) -> int:
    """The caches fish-speech's setup_caches allocates at batch 1 (slow layers + fast layers)."""
    c = _normalise(config)
    seq = _find_multiple(max_seq_len or c["max_seq_len"], 8)
    slow = c["n_layer"] * 2 * seq * c["n_local_heads"] * c["head_dim"]
    fast = 0
    if c.get("model_type") == "dual_ar":
        fast = c["n_fast_layer"] * 2 * c["num_codebooks"] * c["fast_n_local_heads"] * c["fast_head_dim"]
    return (slow + fast) * dtype_bytes


def memory_estimates(config: dict[str, Any], codec_params: int) -> dict[str, MemoryEstimate]:
    """Bytes needed per precision (fp32/fp16/bf16, and int8 weight-only with bf16/fp16 elsewhere)."""
    c = _normalise(config)
    params = llm_parameter_count(c)
    mask = c["max_seq_len"] ** 2  # the causal mask fish-speech keeps as a bool buffer
    estimates = {}
    for precision, nbytes in BYTES.items():
        weights = params * nbytes
        codec = codec_params * nbytes
        estimates[precision] = MemoryEstimate(
            weights_bytes=weights,
            kv_cache_bytes=kv_cache_bytes(c, nbytes),
            codec_bytes=codec,
            buffers_bytes=mask + int(_BUFFER_SHARE * (weights + codec)) + _BUFFER_FIXED,
        )
    # int8 weight-only: linear weights one byte plus a 16-bit scale per output row; embeddings stay 16-bit.
    embed = c["vocab_size"] * c["dim"] + c["codebook_size"] * c["num_codebooks"] * c["dim"]
    linear = params - embed
    int8_weights = linear + embed * 2 + (linear // max(c["dim"], 1)) * 2
    estimates["int8"] = MemoryEstimate(
        weights_bytes=int8_weights,
        kv_cache_bytes=kv_cache_bytes(c, 2),
        codec_bytes=codec_params * 2,
        buffers_bytes=mask + int(_BUFFER_SHARE * (int8_weights + codec_params * 2)) + _BUFFER_FIXED,
    )
    return estimates


# config.json's keys as fish-speech's BaseModelArgs / DualARModelArgs declare them. A key they lack
# makes fish-speech's loader fail; a wrong value builds a model that does not match its weights.
_POSITIVE_INTS = ("vocab_size", "n_layer", "n_head", "dim", "max_seq_len", "codebook_size", "num_codebooks",
                  "n_fast_layer")
_OPTIONAL_POSITIVE_INTS = ("intermediate_size", "head_dim", "fast_dim", "fast_n_head", "fast_n_local_heads",
                           "fast_head_dim", "fast_intermediate_size")
_BOOLS = ("tie_word_embeddings", "attention_qkv_bias", "attention_o_bias", "attention_qk_norm",
          "use_gradient_checkpointing", "is_reward_model", "scale_codebook_embeddings")
_OPTIONAL_BOOLS = ("fast_attention_qkv_bias", "fast_attention_qk_norm", "fast_attention_o_bias")
_FLOATS = ("rope_base", "norm_eps", "dropout", "initializer_range")
KNOWN_KEYS = frozenset(("model_type", "n_local_heads", *_POSITIVE_INTS, *_OPTIONAL_POSITIVE_INTS, *_BOOLS,
                        *_OPTIONAL_BOOLS, *_FLOATS))
MAX_INT = 2**24  # far above any real shape (S1-mini: vocab 155776); keeps sizes arithmetic sane


class _Invalid(ValueError):
    """A config value that cannot describe a model: ``key`` names it."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key} {why}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_config(config: dict[str, Any]) -> None:
    """Every known key has a value fish-speech can build a model from; raises _Invalid naming the key."""
    for key in ("model_type", "dim", "n_layer", "n_head", "vocab_size"):
        if key not in config:
            raise _Invalid(key, "is missing")
    if config["model_type"] not in ("dual_ar", "naive"):
        raise _Invalid("model_type", f"is {config['model_type']!r}, not dual_ar or naive")
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise _Invalid(unknown[0], "is not a Fish Speech config key")
    for key in (*_POSITIVE_INTS, *_OPTIONAL_POSITIVE_INTS):
        value = config.get(key)
        if value is None and (key in _OPTIONAL_POSITIVE_INTS or key not in config):
            continue
        if not _is_int(value) or not 1 <= value <= MAX_INT:
            raise _Invalid(key, f"= {value!r} must be a positive integer (at most {MAX_INT})")
    local = config.get("n_local_heads", -1)
    if not _is_int(local) or not (local == -1 or 1 <= local <= MAX_INT):
        raise _Invalid("n_local_heads", f"= {local!r} must be a positive integer or -1")
    for key in (*_BOOLS, *_OPTIONAL_BOOLS):
        if key in config and not isinstance(config[key], bool) and not (key in _OPTIONAL_BOOLS and config[key] is None):
            raise _Invalid(key, f"= {config[key]!r} must be true or false")
    for key in _FLOATS:
        value = config.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise _Invalid(key, f"= {value!r} must be a non-negative number")
    c = _normalise(config)
    if c["head_dim"] < 1:
        raise _Invalid("n_head", f"= {c['n_head']} is larger than dim {c['dim']} (head_dim would be 0)")
    heads = [("n_head", "n_local_heads")]
    if c["model_type"] == "dual_ar":
        heads.append(("fast_n_head", "fast_n_local_heads"))
    for head, local_key in heads:
        if c[head] % c[local_key]:  # grouped-query attention shares each key/value head among whole groups
            raise _Invalid(local_key, f"= {c[local_key]} must divide {head} = {c[head]}")


def _load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(read_small_text(path))
        if not isinstance(config, dict):
            raise TypeError("not a JSON object")
        validate_config(config)
        llm_parameter_count(config)  # every field it needs is there and numeric
    except _Invalid as exc:
        raise ModelError(f"{path} is corrupt or not a Fish Speech config: {exc}") from None
    # FileTooLarge, UnicodeDecodeError, JSON errors; RecursionError: arrays nested thousands deep
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ModelError(f"{path} is corrupt or not a Fish Speech config ({type(exc).__name__}: {exc})") from None
    return config


def _check_special_tokens(path: Path) -> None:
    """special_tokens.json is a JSON object of token -> id (fish-speech reads it whole, unbounded)."""
    try:
        tokens = json.loads(read_small_text(path))
        if not isinstance(tokens, dict) or not all(_is_int(v) for v in tokens.values()):
            raise TypeError("not a JSON object of token ids")
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise ModelError(f"{path} is corrupt ({type(exc).__name__}: {exc})") from None


def _check_codec_yaml(path: Path) -> None:
    """A codec.yaml is checked at plan time too (when fish-speech is installed to check it against)."""
    import importlib.util

    if not (path / "codec.yaml").exists() and not (path / "codec.yaml").is_symlink():
        return
    if importlib.util.find_spec("fish_speech") is None:
        return  # nothing can load this checkpoint here; the loader checks it where fish-speech is
    from voxfit.engines.fish.codec_config import read_overrides

    read_overrides(path)


def read(path: Path) -> Optional[ModelSpec]:
    if not path.is_dir() or not (path / "config.json").exists():
        return None
    if not ((path / "codec.pth").exists() or (path / "model.pth").exists()):
        return None  # a config.json alone may belong to another family
    missing = [name for name in REQUIRED_FILES if not (path / name).exists()]
    if missing:
        raise ModelError(f"Fish Speech checkpoint {path} is incomplete: missing {', '.join(missing)}")
    irregular = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if irregular:  # a device, FIFO or directory in its place (e.g. a symlink to /dev/zero)
        raise ModelError(f"{path / irregular[0]} is not a regular file")
    tokenizer_bytes = (path / "tokenizer.tiktoken").stat().st_size
    if tokenizer_bytes > TOKENIZER_LIMIT:  # fish-speech reads it whole, unbounded
        raise ModelError(f"{path / 'tokenizer.tiktoken'} is {tokenizer_bytes // 2**20} MiB; "
                         f"a Fish tokenizer is a few MiB (limit {TOKENIZER_LIMIT // 2**20} MiB)")
    for name in ("model.pth", "codec.pth"):
        if (path / name).stat().st_size < 1024:
            raise ModelError(f"{path / name} is truncated ({(path / name).stat().st_size} bytes)")
    config = _load_config(path / "config.json")
    _check_special_tokens(path / "special_tokens.json")
    _check_codec_yaml(path)
    c = _normalise(config)
    codec_params = (path / "codec.pth").stat().st_size // 4  # codec.pth is an fp32 state dict
    params = llm_parameter_count(c)
    return ModelSpec(
        family="fish",
        name=path.name,
        path=path,
        files={name.split(".")[0]: path / name for name in REQUIRED_FILES},
        parameter_count=params + codec_params,
        sample_rate=CODEC_SAMPLE_RATE,
        memory=memory_estimates(c, codec_params),
        needs=["torch", "fish_speech"],
        properties={
            "model_type": c["model_type"],
            "llm_parameters": params,
            "codec_parameters": codec_params,
            "n_layer": c["n_layer"],
            "dim": c["dim"],
            "max_seq_len": c["max_seq_len"],
            # semantic tokens generated per second of audio: RTF = this / tokens per second
            "tokens_per_audio_second": CODEC_SAMPLE_RATE / CODEC_HOP,
            "num_codebooks": c["num_codebooks"],
            "use_gradient_checkpointing": bool(config.get("use_gradient_checkpointing", True)),
            # weights read per generated token: tokens/s ~ achieved bandwidth / (this x bytes per weight)
            "parameters_read_per_token": parameters_read_per_token(c),
        },
    )

"""The Fish codec's config: fish-speech's packaged yaml, plus what a checkpoint's codec.yaml may change.

A model directory is data: nothing in it may choose what code runs. The
codec is always built from fish-speech's packaged ``configs/modded_dac_vq.yaml``
(the classes in :data:`ALLOWED_TARGETS`). A ``codec.yaml`` beside
``codec.pth`` (a voxfit extension; published checkpoints have none) may only
change numeric and boolean hyperparameters that the packaged config already
has, at the same place in its tree:

* read with ``yaml.safe_load`` through a bounded read: no Python tags, no
  OmegaConf interpolation or resolvers (its strings never reach OmegaConf);
* keys starting with ``_`` (``_target_``, ``_args_``, ``_partial_``,
  ``_recursive_``, ``_convert_``) and keys the packaged config lacks are refused;
* integers stay integers within bounds, floats stay finite in [0, 1], booleans
  stay booleans, lists stay short lists of integers; strings are refused
  (every string of the packaged config is a ``_target_``).

Every refusal is a one-line :class:`ModelError` naming the file and the key.
Light: no torch, fish-speech is located, not imported.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from voxfit.sdk import ModelError, read_small_text

CODEC_YAML = "codec.yaml"
PACKAGED_YAML = ("configs", "modded_dac_vq.yaml")
#: The only classes the codec config may instantiate: those fish-speech's packaged config uses.
ALLOWED_TARGETS = frozenset({
    "fish_speech.models.dac.modded_dac.DAC",
    "fish_speech.models.dac.modded_dac.ModelArgs",
    "fish_speech.models.dac.modded_dac.WindowLimitedTransformer",
    "fish_speech.models.dac.rvq.DownsampleResidualVectorQuantize",
})
MAX_LIST = 16
_POLICY = "a model directory may only override numeric hyperparameters of the packaged codec config"


def fish_package_dir() -> Path:
    """fish_speech's directory (a namespace package: no __init__.py), found without importing it."""
    spec = importlib.util.find_spec("fish_speech")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelError("fish-speech is not installed: its packaged codec config cannot be found")
    return Path(locations[0])


def packaged_codec_yaml() -> Path:
    return fish_package_dir().joinpath(*PACKAGED_YAML)


def packaged_codec_tree() -> dict[str, Any]:
    """The packaged config as plain Python (trusted: it ships with fish-speech), its targets checked."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(OmegaConf.load(packaged_codec_yaml()), resolve=True)
    check_targets(tree, packaged_codec_yaml())
    return tree  # type: ignore[return-value]


def check_targets(tree: Any, source: Path, where: str = "") -> None:
    """Every ``_target_`` anywhere in ``tree`` is one of :data:`ALLOWED_TARGETS`."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            at = f"{where}.{key}" if where else str(key)
            if key == "_target_" and value not in ALLOWED_TARGETS:
                raise ModelError(f"{source}: {at} names {value!r}, not one of the fish-speech codec classes")
            check_targets(value, source, at)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            check_targets(value, source, f"{where}[{i}]")


def read_overrides(checkpoint: Path) -> dict[str, Any]:
    """The validated overrides of ``checkpoint``'s codec.yaml ({} when there is none)."""
    path = Path(checkpoint) / CODEC_YAML
    if not path.exists() and not path.is_symlink():
        return {}
    import yaml

    try:
        data = yaml.safe_load(read_small_text(path))
    except (OSError, ValueError) as exc:  # FileTooLarge, UnicodeDecodeError
        raise ModelError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
    except (yaml.YAMLError, RecursionError) as exc:  # RecursionError: flow collections nested thousands deep
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(f"{path} is not a plain YAML mapping ({type(exc).__name__}: {first})") from None
    if data is None:
        return {}
    return _checked(path, data, packaged_codec_tree(), "")


def merged_codec_tree(checkpoint: Path) -> dict[str, Any]:
    """The packaged config with the checkpoint's validated overrides applied, targets re-checked."""
    tree = packaged_codec_tree()
    _merge(tree, read_overrides(checkpoint))
    check_targets(tree, Path(checkpoint) / CODEC_YAML)
    return tree


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _refuse(path: Path, where: str, why: str) -> ModelError:
    return ModelError(f"{path}: {where or 'the document'} {why}")


def _checked(path: Path, value: Any, packaged: Any, where: str) -> Any:
    """``value`` validated against the packaged node at the same place; a ModelError otherwise."""
    if isinstance(packaged, dict):
        if not isinstance(value, dict):
            raise _refuse(path, where, "must be a mapping")
        out = {}
        for key, item in value.items():
            at = f"{where}.{key}" if where else str(key)
            if not isinstance(key, str) or key.startswith("_"):
                raise _refuse(path, f"key {at}", f"is not allowed ({_POLICY}; classes and call options are fixed)")
            if key not in packaged:
                raise _refuse(path, f"key {at}", f"is unknown ({_POLICY})")
            out[key] = _checked(path, item, packaged[key], at)
        return out
    if isinstance(packaged, list):
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
            raise _refuse(path, f"key {where}", f"must be a list of 1 to {MAX_LIST} integers")
        bound = max((abs(p) for p in packaged if isinstance(p, int)), default=0)
        zero_ok = any(p == 0 for p in packaged)
        return [_checked_int(path, item, bound, zero_ok, False, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(packaged, bool):
        if not isinstance(value, bool):
            raise _refuse(path, f"key {where}", "must be true or false")
        return value
    if isinstance(packaged, int):
        return _checked_int(path, value, abs(packaged), packaged == 0, packaged == -1, where)
    if isinstance(packaged, float):
        if isinstance(value, str):
            try:
                value = float(value)  # plain YAML reads 1e-5 as a string
            except ValueError:
                raise _refuse(path, f"key {where}", "must be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _refuse(path, f"key {where}", "must be a finite number")
        if not 0.0 <= value <= 1.0:
            raise _refuse(path, f"key {where}", f"= {value} is out of range [0, 1]")
        return float(value)
    raise _refuse(path, f"key {where}", f"is not allowed ({_POLICY})")


def _checked_int(path: Path, value: Any, packaged: int, zero_ok: bool, minus_one_ok: bool, where: str) -> int:
    """A positive integer (0 where the packaged value is 0, -1 where it is -1), at most twice the packaged one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(path, f"key {where}", f"must be an integer, not {type(value).__name__}")
    upper = max(2 * packaged, 64)
    if value == 0 and zero_ok or value == -1 and minus_one_ok:
        return value
    if not 1 <= value <= upper:
        raise _refuse(path, f"key {where}", f"= {value} is out of range (1 to {upper})")
    return value

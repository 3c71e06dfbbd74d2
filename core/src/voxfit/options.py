"""Voice options: one channel from the user (CLI flags, ``-O key=value``, HTTP, Python) to the engine.

Each engine registers a pydantic model of the options it takes
(``EngineInfo.options``). Whatever the user gave is validated against the
chosen engine's model before anything is loaded; a wrong name or value is
one line naming the option, the engine and what it takes.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from voxfit.errors import UsageError


def parse_assignments(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``["speaker=3", "length_scale=1.2"]`` -> a dict; values stay strings for the model to convert."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UsageError(f"-O expects KEY=VALUE (e.g. -O length_scale=1.2), got {pair!r}")
        out[key] = value
    return out


def describe(model: Optional[type[BaseModel]]) -> str:
    """"speaker, length_scale (> 0), ..." for messages and ``--help`` texts."""
    if model is None:
        return "none"
    return ", ".join(model.model_fields)


def validate_options(backend: str, model: Optional[type[BaseModel]], given: dict[str, Any]) -> Optional[BaseModel]:
    """The options as the engine's model, or None for an engine that takes none; one-line UsageError otherwise."""
    given = {k: v for k, v in given.items() if v is not None}
    if model is None:
        if given:
            raise UsageError(f"{_names(given)} does not apply to the {backend} engine: it takes no voice options")
        return None
    unknown = [k for k in given if k not in model.model_fields]
    if unknown:
        raise UsageError(
            f"{_names({k: None for k in unknown})} does not apply to the {backend} engine (it takes: {describe(model)})"
        )
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "options"
        value = given.get(name, err.get("input"))
        raise UsageError(f"option {name}={value!r} for the {backend} engine: {err['msg']}") from None


def _names(options: dict[str, Any]) -> str:
    return ", ".join(f"--{k.replace('_', '-')}" for k in options)

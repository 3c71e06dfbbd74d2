"""Voice options: one channel from the user (CLI flags, ``-O key=value``, HTTP, Python) to the engine.

Each engine registers a pydantic model of the options it takes
(``EngineInfo.options``). Whatever the user gave is validated against the
chosen engine's model before anything is loaded; a wrong name or value is
one line naming the option, the engine and what it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """"speaker, length_scale, ..." for messages."""
    if model is None:
        return "none"
    return ", ".join(model.model_fields)


@dataclass(frozen=True)
class OptionDoc:
    """One voice option as people read it: its name, type, range, default and what it does.

    Built from the engine's registered options model (its JSON schema), so the
    CLI's help, ``voxfit engines``, the HTTP API and the page all say the same.
    """

    name: str
    type: str
    range: str
    default: Any
    description: str

    def line(self) -> str:
        """``length_scale  number, > 0 and <= 10 (default: the voice's own)  Phoneme length: ...``"""
        kind = self.type + (f", {self.range}" if self.range else "")
        default = "the voice's own" if self.default is None else repr(self.default)
        return f"{self.name}  {kind} (default: {default})  {self.description}".rstrip()


_BOUNDS = (("exclusiveMinimum", "> {}"), ("minimum", ">= {}"), ("exclusiveMaximum", "< {}"), ("maximum", "<= {}"),
           ("minLength", "at least {} characters"), ("maxLength", "at most {} characters"))
_TYPES = {"number": "number", "integer": "integer", "string": "text", "boolean": "true/false"}


def option_docs(model: Optional[type[BaseModel]]) -> list[OptionDoc]:
    """Every option of an engine's options model, documented (empty for an engine that takes none)."""
    if model is None:
        return []
    properties = model.model_json_schema().get("properties", {})
    return [_doc(name, properties.get(name, {}), field.description or "")
            for name, field in model.model_fields.items()]


def _doc(name: str, schema: dict[str, Any], description: str) -> OptionDoc:
    variants = [v for v in schema.get("anyOf", [schema]) if v.get("type") != "null"] or [schema]
    types = []
    for variant in variants:
        kind = "path" if variant.get("format") == "path" else _TYPES.get(variant.get("type", ""), "value")
        if kind not in types:
            types.append(kind)
    bounds = [text.format(variant[key]) for variant in variants for key, text in _BOUNDS if key in variant]
    return OptionDoc(name=name, type=" or ".join(types), range=" and ".join(bounds),
                     default=schema.get("default"), description=description)


def validate_options(backend: str, model: Optional[type[BaseModel]], given: dict[str, Any]) -> Optional[BaseModel]:
    """The options as the engine's model, or None for an engine that takes none; one-line UsageError otherwise."""
    given = {k: v for k, v in given.items() if v is not None}
    if model is None:
        if given:
            raise UsageError(f"{_names(list(given))} does not apply to the {backend} engine: it takes no voice options")
        return None
    unknown = [k for k in given if k not in model.model_fields]
    if unknown:
        raise UsageError(
            f"{_names(unknown)} does not apply to the {backend} engine (it takes: {describe(model)})"
        )
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = err["msg"].removeprefix("Value error, ")
        name = ".".join(str(p) for p in err["loc"])
        if not name:  # a rule between options
            raise UsageError(f"options for the {backend} engine: {message}") from None
        if err["type"] == "value_error":  # the model's own rule, whose message says what is wrong
            raise UsageError(f"option {name} for the {backend} engine: {message}") from None
        value = given.get(name, err.get("input"))
        raise UsageError(f"option {name}={value!r} for the {backend} engine: {message}") from None


def _names(names: list[str]) -> str:
    return ("option " if len(names) == 1 else "options ") + ", ".join(names)

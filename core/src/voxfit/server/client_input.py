"""Reading what clients send, bounded in size and depth, for every protocol.

Python's ``json`` parser recurses once per nesting level, so a 2 KB body of
1,000 nested brackets ends in ``RecursionError`` deep inside it. Every parser
of client input (HTTP bodies, form fields, Wyoming event headers and data,
anything added later) goes through :func:`parse_json`, which measures the
nesting before parsing and refuses what is too deep or too large with
:class:`InputRefused`, one line, which each protocol turns into its own answer
(a 4xx, a Wyoming ``error`` event).
"""

from __future__ import annotations

import json
from typing import Any, Union

#: The deepest nesting a request may have: voxfit's own bodies are two levels deep.
MAX_DEPTH = 32


class InputRefused(ValueError):
    """Client input that is not read: too large, too deep, or not JSON."""


def nesting_depth(raw: Union[str, bytes]) -> int:
    """The deepest bracket nesting of a JSON text (brackets inside strings do not count), read in one pass."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else raw
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(raw: Union[str, bytes], what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """``raw`` parsed as JSON, or :class:`InputRefused` naming ``what`` and why (one line)."""
    if len(raw) > max_bytes:
        raise InputRefused(f"{what} is {len(raw)} bytes; at most {max_bytes} are read")
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise InputRefused(f"{what} is nested {depth} levels deep; at most {max_depth} are read")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        detail = str(exc).split(": line", 1)[0] if isinstance(exc, ValueError) else type(exc).__name__
        raise InputRefused(f"{what} is not valid JSON ({detail})") from None

"""What an unauthenticated client may read of the server's own machine: names, not paths.

Without an API key anyone who reaches the port reads ``/v1/plan``,
``/v1/system`` and the voice list; those carry where the server's files live
(model paths, cache folders, reasons that quote a path) and the host's name.
:func:`public` keeps every figure and name and replaces each absolute path by
its last part and the host name by ``(host)``. With a key set, clients are
trusted and see everything.
"""

from __future__ import annotations

import platform
import re
import socket
from typing import Any

# An absolute POSIX path (two parts at least) or a Windows one, up to a space, quote or separator.
_PATH = re.compile(r"""(?<![\w.~:/])(?:[A-Za-z]:\\|/)(?:[^\s'"`,;()\[\]{}<>|]+[/\\])+([^\s'"`,;()\[\]{}<>|/\\]*)""")


def _host_names() -> list[str]:
    names = {socket.gethostname(), platform.node()}
    with_domain = {n for n in names if n}
    return sorted((n for n in with_domain if n not in {"localhost"}), key=len, reverse=True)


def _scrub(text: str, hosts: list[str]) -> str:
    text = _PATH.sub(lambda m: m.group(1) or "(folder)", text)
    for host in hosts:  # whole words only: a host called "cpu" must not rename the CPU
        text = re.sub(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", "(host)", text)
    return text


def public(data: Any, hosts: list[str] | None = None) -> Any:
    """``data`` (JSON-shaped) with paths reduced to their last part and the host name hidden."""
    hosts = _host_names() if hosts is None else hosts
    if isinstance(data, str):
        return _scrub(data, hosts)
    if isinstance(data, dict):
        return {key: public(value, hosts) for key, value in data.items()}
    if isinstance(data, list):
        return [public(value, hosts) for value in data]
    return data

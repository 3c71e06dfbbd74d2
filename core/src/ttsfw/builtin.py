"""The core's own hook implementations, registered before any plugin."""

from __future__ import annotations

from typing import Generator

from .hookspecs import hookimpl
from .models import Proposal


@hookimpl(wrapper=True, trylast=True)
def score_config() -> Generator[None, list[list[Proposal]], list[Proposal]]:
    # The innermost wrapper: flattens the per-plugin lists, so that plugin
    # wrappers (entered earlier, leaving later) see one flat list of proposals.
    per_plugin = yield
    return [proposal for group in per_plugin for proposal in group]

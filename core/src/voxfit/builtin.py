"""The core's own hook implementations, registered before any plugin.

Only what is not about any hardware or engine: flattening the proposals for
plugin wrappers, and the CPU as a device family every machine has.
"""

from __future__ import annotations

from typing import Callable, Generator

from voxfit.hookspecs import hookimpl
from voxfit.models import Proposal
from voxfit.registry import DeviceFamilyInfo


@hookimpl(wrapper=True, trylast=True)
def score_config() -> Generator[None, list[list[Proposal]], list[Proposal]]:
    # The innermost wrapper: flattens the per-plugin lists, so that plugin
    # wrappers (entered earlier, leaving later) see one flat list of proposals.
    per_plugin = yield
    return [proposal for group in per_plugin for proposal in group]


@hookimpl
def register_device_families(register: Callable[[DeviceFamilyInfo], None]) -> None:
    # Every machine has a CPU; which plugin runs what on it is theirs to say.
    register(DeviceFamilyInfo(name="cpu", description="the host's processor"))

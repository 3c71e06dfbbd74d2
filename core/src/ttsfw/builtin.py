"""The core's own hook implementations, registered before any plugin."""

from __future__ import annotations

from typing import Any, Generator, Optional

from .engines import engine_info
from .hookspecs import hookimpl
from .models import EnvChange, Proposal


@hookimpl(wrapper=True, trylast=True)
def score_config() -> Generator[None, list[list[Proposal]], list[Proposal]]:
    # The innermost wrapper: flattens the per-plugin lists, so that plugin
    # wrappers (entered earlier, leaving later) see one flat list of proposals.
    per_plugin = yield
    return [proposal for group in per_plugin for proposal in group]


def _runs_fish(backend: str) -> bool:
    info = engine_info(backend)
    return info is not None and "fish" in info.families


@hookimpl
def prepare_env(proposal: Proposal) -> Optional[list[EnvChange]]:
    # The fish adapter is the core's, so the core says what it needs, whichever plugin placed it.
    if not _runs_fish(proposal.engine):
        return None
    from .engines.fish_torch import fish_env_changes

    return [change.model_copy(update={"plugin": "core"}) for change in fish_env_changes()]


@hookimpl
def disable_training_artifacts(engine: Any) -> Optional[list[str]]:
    # Every plugin that loads the core's fish adapter (cpu_onnx, cuda, mps) relies on this
    # one implementation; a plugin's wrapper around the engine is looked through.
    if not _runs_fish(str(getattr(engine, "backend", ""))):
        return None
    from .engines.fish_torch import disable_training_artifacts as disable

    return disable(engine)

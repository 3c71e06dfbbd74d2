"""The core's own check that a loaded engine carries no training artifact.

Whatever the plugins' ``disable_training_artifacts`` hooks claim, the core
looks at the modules itself. It works on any torch module by duck typing, so
this file never imports torch.
"""

from __future__ import annotations

from typing import Any, Iterable

_CHECKPOINT_FLAGS = ("use_gradient_checkpointing", "gradient_checkpointing")
_SHOW = 3  # names listed per violation before "and N more"


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def _has_weight_norm(module: Any) -> bool:
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None:
        for plist in dict(parametrizations).values():
            if any("WeightNorm" in type(p).__name__ for p in plist):
                return True
    hooks = getattr(module, "_forward_pre_hooks", {}) or {}
    return any(type(h).__name__ == "WeightNorm" for h in hooks.values())


def _checkpointing_on(module: Any) -> bool:
    if any(getattr(module, flag, False) is True for flag in _CHECKPOINT_FLAGS):
        return True
    config = getattr(module, "config", None)
    return any(getattr(config, flag, False) is True for flag in _CHECKPOINT_FLAGS)


def violations(modules: Iterable[Any]) -> list[str]:
    """One line per kind of training artifact found; empty when the engine is clean."""
    training, checkpointing, weight_norm, grads = [], [], [], []
    for index, root in enumerate(modules):
        label = type(root).__name__ if index == 0 else f"{type(root).__name__}#{index}"
        for name, module in root.named_modules():
            where = f"{label}.{name}" if name else label
            if getattr(module, "training", False):
                training.append(where)
            if _checkpointing_on(module):
                checkpointing.append(where)
            if _has_weight_norm(module):
                weight_norm.append(where)
        grads.extend(f"{label}.{n}" for n, p in root.named_parameters() if getattr(p, "requires_grad", False))
    found = []
    if training:
        found.append(f"{len(training)} modules in training mode (dropout active): {_names(training)}")
    if grads:
        found.append(f"{len(grads)} parameters track gradients: {_names(grads)}")
    if checkpointing:
        found.append(f"gradient checkpointing on in {_names(checkpointing)}")
    if weight_norm:
        found.append(f"{len(weight_norm)} weight-norm parametrizations left: {_names(weight_norm)}")
    return found

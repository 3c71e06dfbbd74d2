"""Engine adapters that ship inside the core: Fish Speech, as the default plugin ``fish``.

Nothing here is imported at ``import voxfit``: the default plugin
(:mod:`voxfit.engines.fish.plugin`) registers the engines through the same
hooks any plugin uses, and the adapters import torch and fish-speech only
when an engine is built.
"""

"""Model-format readers shipped with the core (Fish Speech checkpoints).

Formats arrive through the ``resolve_model`` hook; the core's own fish
reader is called by its default plugin (:mod:`voxfit.engines.fish_plugin`)
exactly as a third party's reader would be.
"""

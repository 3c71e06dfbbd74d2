"""Helpers for voxfit's own tests and benchmarks, and for plugin authors' tests: no heavy import at import time.

* :mod:`voxfit.testing.conformance`: the plugin conformance kit
  (``assert_conformant(my_plugin)`` checks a plugin against the hook contracts);
* each engine's own helpers live with it (e.g. tiny checkpoints with random weights under ``voxfit.engines``).

Plugin code never imports from here: only its tests do.
"""

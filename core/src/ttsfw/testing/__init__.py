"""Helpers for ttsfw's own tests and benchmarks (and plugin authors' tests): no heavy import at import time."""

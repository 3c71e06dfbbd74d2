"""The attention kernel the Fish engine computes with, held safely across threads.

PyTorch keeps its choice of ``scaled_dot_product_attention`` kernel in process-wide flags, and
``torch.nn.attention.sdpa_kernel`` puts back on exit whatever it found on entry. The engine's threads
overlap: the batch's loop runs the slow transformer while a request's thread decodes an audio window.
With one ``sdpa_kernel`` each, the first to leave put the default kernels back while the other was still
inside, so that thread's next attention ran through CPU flash attention, which is not repeatable
(docs/field-notes.md#cpu-flash-attention), and a seeded sentence could come out different.

:func:`math_attention` counts its holders across the process: the flags go to the math kernel when the
first one enters and come back when the last one leaves.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Optional

_lock = threading.Lock()
_holders = 0
_held: Optional[Any] = None  # the sdpa_kernel context that set the flags, while anyone holds them


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Attention through PyTorch's math kernel while the block runs, whatever other threads enter or leave."""
    _enter()
    try:
        yield
    finally:
        _leave()


def _enter() -> None:
    global _holders, _held
    with _lock:
        if _holders == 0:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            context = sdpa_kernel(SDPBackend.MATH)
            context.__enter__()
            _held = context
        _holders += 1


def _leave() -> None:
    global _holders, _held
    with _lock:
        _holders -= 1
        if _holders == 0 and _held is not None:
            context, _held = _held, None
            context.__exit__(None, None, None)

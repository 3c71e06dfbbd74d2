"""One scale for every speed estimate: the decode roofline and each backend's constants.

Batch-1 autoregressive decoding reads every weight once per generated token,
so a token costs the time to stream those bytes plus a fixed overhead (Python,
kernel launches, synchronisation) that does not shrink with bandwidth::

    seconds per token = bytes read per token / (efficiency x bandwidth) + overhead per token
    RTF               = tokens per audio second / tokens per second

Every plugin that estimates decoding speed calls :func:`decode_speed` with
the name of its backend's constants below, so an estimate on a Mac and one
on an NVIDIA card are comparable. Each constant says whether it was measured
(and where) or assumed; the reasons a plan shows repeat that. The sources are
summarised in ``docs/field-notes.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class BackendConstants:
    efficiency: float  # share of the device's bandwidth that decoding's weight reads reach
    overhead_s: float  # seconds per token spent outside weight reads
    source: str  # where the numbers come from, in words a user can check
    measured: bool  # True when measured on real hardware, False when assumed or calibrated by analogy


#: The constants, one entry per backend. Change them only with evidence, and
#: say where it came from: every plan that uses them shows the source.
BACKENDS: dict[str, BackendConstants] = {
    # fish-speech's eager loop on an NVIDIA GPU. The field notes' RTX 3060 ran
    # S1-mini in fp16 at RTF 2-3 (7-11 tokens/s) although its 360 GB/s would
    # stream the weights ~150 times a second: the loop's ~800 small kernel
    # launches per token dominate. Large-matmul streaming reaches ~60% of the
    # published bandwidth (assumed); the overhead is what remains of the 3060's
    # tokens (85 ms, the fast end of 85-135 ms).
    "cuda-eager": BackendConstants(
        0.6, 0.085, "calibrated on the field notes' RTX 3060 (S1-mini fp16, RTF 2-3); not measured on this card",
        measured=False,
    ),
    # The same loop on an Apple GPU through MPS. No fp16-on-MPS measurement of
    # fish-speech exists in the field notes; Metal's dispatch is assumed no
    # cheaper than CUDA's, so the CUDA calibration is used as it is.
    "mps-eager": BackendConstants(
        0.6, 0.085, "assumed equal to the CUDA calibration (no fp16-on-MPS measurement); Apple GPU bandwidth "
        "from the chip table", measured=False,
    ),
    # torch on the CPU: MEASURED on the 2-core development server with an
    # S1-mini-shaped model (random weights, fp32): 405-430 ms per token with
    # one thread, i.e. ~11 GB/s achieved; the bandwidth passed in is already
    # the achieved figure. Overhead: 1.4 ms per codebook on the tiny checkpoint
    # (callers pass overhead_s scaled by the model's codebooks).
    "cpu-torch": BackendConstants(
        1.0, 0.0, "measured on a 2-core AMD EPYC server with an S1-mini-shaped model (11 GB/s, one thread) and "
        "the tiny test checkpoint (1.4 ms per codebook)", measured=True,
    ),
}

#: torch.compile of the decode step on Linux/WSL2 + NVIDIA: the field notes
#: saw 20-30% faster decoding; the low end is used. Not measured here.
COMPILE_SPEEDUP = 1.2


@dataclass(frozen=True)
class DecodeSpeed:
    tokens_per_s: float
    rtf: Optional[float]
    reason: str
    measured: bool


def decode_speed(
    backend: str,
    bytes_per_token: float,
    bandwidth_bytes_per_s: float,
    tokens_per_audio_second: Optional[float] = None,
    *,
    overhead_s: Optional[float] = None,
    speedup: float = 1.0,
    speedup_reason: str = "",
) -> DecodeSpeed:
    """Tokens/s (and RTF when ``tokens_per_audio_second`` is known) on one scale, with its reason.

    ``overhead_s`` replaces the backend's per-token overhead where the caller
    knows better (e.g. scaled by the model's codebooks); ``speedup`` applies a
    named factor such as :data:`COMPILE_SPEEDUP`.
    """
    c = BACKENDS[backend]
    overhead = c.overhead_s if overhead_s is None else overhead_s
    read_s = bytes_per_token / (c.efficiency * bandwidth_bytes_per_s)
    tokens_per_s = speedup / (read_s + overhead)
    rtf = tokens_per_audio_second / tokens_per_s if tokens_per_audio_second else None
    read = f"{bytes_per_token / 1e9:.2f} GB" if bytes_per_token >= 1e8 else f"{bytes_per_token / 1e6:.1f} MB"
    efficiency = f"{c.efficiency:.0%} of " if c.efficiency != 1.0 else ""
    reason = (
        f"speed: ~{tokens_per_s:.1f} tokens/s = 1 / ({read} per token at {efficiency}"
        f"{bandwidth_bytes_per_s / 1e9:.0f} GB/s = {read_s * 1e3:.0f} ms + {overhead * 1e3:.1f} ms overhead per token)"
        + (f" x {speedup:g} {speedup_reason}".rstrip() if speedup != 1.0 else "")
        + (f"; RTF ~{rtf:.2f} at {tokens_per_audio_second:.1f} tokens per audio second" if rtf else "")
        + f" [{'measured' if c.measured else 'estimated'}: {c.source}]"
    )
    return DecodeSpeed(tokens_per_s=tokens_per_s, rtf=rtf, reason=reason, measured=c.measured)

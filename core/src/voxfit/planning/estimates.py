"""One scale for every speed estimate: the decode roofline.

Batch-1 autoregressive decoding reads every weight once per generated token,
so a token costs the time to stream those bytes plus a fixed overhead (Python,
kernel launches, synchronisation) that does not shrink with bandwidth::

    seconds per token = bytes read per token / (efficiency x bandwidth) + overhead per token
    RTF               = tokens per audio second / tokens per second

Every plugin that estimates decoding speed calls :func:`decode_speed` with
the engine's calibration for the device family (``EngineInfo.decode``,
registered by the engine's plugin), so an estimate on a Mac and one on an
NVIDIA card are comparable. Each calibration says whether it was measured
(and where) or assumed; the reasons a plan shows repeat that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from voxfit.engine import DecodeCalibration


@dataclass(frozen=True)
class DecodeSpeed:
    tokens_per_s: float
    rtf: Optional[float]
    reason: str
    measured: bool


def decode_speed(
    calibration: DecodeCalibration,
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
    named factor such as the calibration's ``compile_speedup``.
    """
    c = calibration
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

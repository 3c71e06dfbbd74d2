"""Apple Silicon chips: unified-memory bandwidth, the number a token-rate estimate rests on.

Autoregressive decoding at batch 1 is bandwidth bound (docs/field-notes.md), so the
estimate needs each chip's memory bandwidth. Figures are Apple's published
ones (Apple Newsroom launch articles and the "Tech Specs" pages of the Macs
that carry each chip), in GB/s:

* M1 68.25 (Nov 2020); M1 Pro 200, M1 Max 400 (Oct 2021); M1 Ultra 800 (Mar 2022)
* M2 100 (Jun 2022); M2 Pro 200, M2 Max 400 (Jan 2023); M2 Ultra 800 (Jun 2023)
* M3 100, M3 Pro 150, M3 Max 300 with the 30-core GPU / 400 with the 40-core GPU (Oct 2023);
  M3 Ultra 819 (Mar 2025)
* M4 120, M4 Pro 273, M4 Max 410 with the 32-core GPU / 546 with the 40-core GPU (Oct 2024)

Where one chip name comes in two bandwidths, the GPU core count (from
``ioreg``) tells them apart; when it is unknown, the lower figure is used
and the reason says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ChipBandwidth:
    chip: str  # "M1 Pro"
    bandwidth_gbps: float
    reason: str


# chip -> [(gpu cores this figure applies to, or None for every variant), GB/s]
BANDWIDTH_GBPS: dict[str, list[tuple[Optional[frozenset[int]], float]]] = {
    "M1": [(None, 68.25)],
    "M1 Pro": [(None, 200.0)],
    "M1 Max": [(None, 400.0)],
    "M1 Ultra": [(None, 800.0)],
    "M2": [(None, 100.0)],
    "M2 Pro": [(None, 200.0)],
    "M2 Max": [(None, 400.0)],
    "M2 Ultra": [(None, 800.0)],
    "M3": [(None, 100.0)],
    "M3 Pro": [(None, 150.0)],
    "M3 Max": [(frozenset({30}), 300.0), (frozenset({40}), 400.0)],
    "M3 Ultra": [(None, 819.0)],
    "M4": [(None, 120.0)],
    "M4 Pro": [(None, 273.0)],
    "M4 Max": [(frozenset({32}), 410.0), (frozenset({40}), 546.0)],
}

_CHIP = re.compile(r"\bM(\d+)(?:\s+(Pro|Max|Ultra))?\b")


def chip_name(brand: str) -> Optional[str]:
    """'Apple M2 Max' -> 'M2 Max'; None when the brand string names no M-series chip."""
    if "apple" not in brand.lower():
        return None
    match = _CHIP.search(brand)
    if not match:
        return None
    return f"M{match.group(1)}" + (f" {match.group(2)}" if match.group(2) else "")


def bandwidth(chip: Optional[str], gpu_cores: Optional[int]) -> Optional[ChipBandwidth]:
    """The chip's memory bandwidth with where it came from; None for a chip not in the table."""
    if chip is None or chip not in BANDWIDTH_GBPS:
        return None
    variants = BANDWIDTH_GBPS[chip]
    if len(variants) == 1:
        return ChipBandwidth(chip, variants[0][1], f"{chip}: {variants[0][1]:g} GB/s unified memory (Apple's figure)")
    for cores, gbps in variants:
        if cores and gpu_cores in cores:
            return ChipBandwidth(chip, gbps, f"{chip} with a {gpu_cores}-core GPU: {gbps:g} GB/s (Apple's figure)")
    low = min(g for _, g in variants)
    options = ", ".join(f"{g:g} GB/s with {'/'.join(map(str, sorted(c or [])))}-core GPU" for c, g in variants)
    seen = f"a {gpu_cores}-core GPU" if gpu_cores else "an unknown GPU core count"
    return ChipBandwidth(chip, low, f"{chip} comes as {options}; {seen}, so the lower {low:g} GB/s is assumed")

"""Audio before the sentence ends: codes decoded to audio in overlapping windows as they arrive.

The S1 codec's decoder is causal (causal convolutions, attention limited to a
window of past frames), so the audio of frames ``[a, b)`` decoded with some
frames of left context before ``a`` matches the one-shot decode of the whole
sentence closely: on the tiny checkpoint, 16 frames of context leave a
largest difference of ~6-7e-6 (full scale 1.0;
``tests/test_fish_batching.py::test_streamed_windows_join_to_the_one_shot_decode``
compares every seam). The published codec's transformers look back further
(128 frames): there the seams are close, not exact, and how close is not
measured (no published weights here). Each window re-decodes its context, so
windows grow (doubling, up to :data:`LARGEST_WINDOW`) to keep that cost small.

The first window waits for enough frames that playback never starves: a
device that makes frames faster than they play needs only a few; a slower
one must be ahead by the share of the sentence it cannot keep up with
(:func:`first_window`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

#: frames of left context each window re-decodes, for a seam that matches the one-shot decode
CONTEXT_FRAMES = 16
#: fewest frames in the first window: ~0.37 s of S1 audio, enough for the codec's first convolutions
SMALLEST_FIRST = 8
#: later windows double up to this many frames
LARGEST_WINDOW = 64
#: S1's codec frames per second of audio (44.1 kHz / 2048 samples per frame)
FRAMES_PER_SECOND = 44100 / 2048
#: frames S1 speaks per character of text: ~21.5 frames/s against ~15 characters/s of speech
FRAMES_PER_CHARACTER = 1.5
#: a device is trusted to keep pace only with this margin on its measured or planned speed
SPEED_MARGIN = 0.8


@dataclass(frozen=True)
class WindowPlan:
    """How one sentence's codes become audio pieces."""

    first: int
    context: int = CONTEXT_FRAMES
    largest: int = LARGEST_WINDOW

    def reason(self) -> str:
        return (f"first audio after {self.first} frames ({self.first / FRAMES_PER_SECOND:.2f} s of speech), "
                f"then windows doubling to {self.largest} frames, each with {self.context} frames of context")


def first_window(text_chars: int, tokens_per_s: Optional[float], frames_per_s: float = FRAMES_PER_SECOND) -> int:
    """Frames to wait for before the first audio of a sentence of ``text_chars`` characters.

    Frames arrive at ``tokens_per_s`` (one frame per token) and play at
    ``frames_per_s``. Starting playback after ``F`` frames, frame ``k`` is
    ready ``(k - F) / tokens_per_s`` after the start and played ``k /
    frames_per_s`` after it; the last frame ``N`` is the tightest when the
    device is slower than real time, so ``F >= N (1 - speed / frames_per_s)``.
    Unknown speed: assume real time.
    """
    expected = max(1, math.ceil(text_chars * FRAMES_PER_CHARACTER))
    speed = (tokens_per_s or frames_per_s) * SPEED_MARGIN
    behind = max(0.0, 1.0 - speed / frames_per_s)
    return max(SMALLEST_FIRST, min(expected, math.ceil(expected * behind)))


def windows(frames: Iterable[Any], decode: Callable[[Any], Any], plan: WindowPlan,
            samples_per_frame: int) -> Iterator[tuple[Any, int]]:
    """(waveform, frames) for each window of ``frames`` (codes [K] each, in order); ``decode`` takes codes
    [K, T] and returns T * samples_per_frame samples. The pieces joined equal the one-shot decode up to
    the seams' rounding."""
    import torch

    kept: list[Any] = []  # the context and the frames not yet spoken
    spoken = 0  # frames whose audio was yielded
    total = 0
    target = plan.first
    for frame in frames:
        kept.append(frame)
        total += 1
        if total - spoken >= target:
            yield _decode(kept, total - spoken, decode, samples_per_frame, torch), total - spoken
            spoken, target = total, min(plan.largest, target * 2)
            kept = kept[-plan.context:] if plan.context else []
    if total > spoken:
        yield _decode(kept, total - spoken, decode, samples_per_frame, torch), total - spoken


def _decode(kept: list[Any], new: int, decode: Callable[[Any], Any], samples_per_frame: int, torch: Any) -> Any:
    wave = decode(torch.stack(kept, dim=1))
    return wave[(len(kept) - new) * samples_per_frame:]

"""Audio before the sentence ends: codes decoded to audio in overlapping windows as they arrive.

The S1 codec's decoder is causal (causal convolutions, attention limited to a
window of past frames), so the audio of frames ``[a, b)`` decoded with some
frames of left context before ``a`` matches the one-shot decode of the whole
sentence closely: on the tiny checkpoint, 16 frames of context leave a
largest difference of ~6-7e-6 (full scale 1.0;
``tests/test_fish_batching.py::test_streamed_windows_join_to_the_one_shot_decode``
compares every seam), and a random-weight codec of the published shape ~1e-5,
one 16-bit step at most. The published codec's transformers look back further
(128 frames): there the seams are close, not exact, and how close is not
measured (no published weights here).

Only the codec's quantizer (codes to latent, with its transformer at the
frame rate, ~3% of a decode) re-runs over all of a window's context; the
convolutional decoder, the rest, re-runs only over the few frames its
convolutions read (5 for S1's, ``codec.decoder_context_frames``): a window
of 64 new frames costs 69 frames of decoding, not 80. Still, windows are as
large as playback allows: the first waits for enough frames that playback never starves (a
device that makes frames faster than they play needs only a few; a slower one
must be ahead by the share of the sentence it cannot keep up with,
:func:`first_window`), and each next one holds as many frames as the device
makes while the audio already decoded plays (:meth:`WindowPlan.sizes`), up to
:data:`LARGEST_WINDOW`. Both come from the plan's speed, not the run's, so the
same text and seed always give the same windows and the same audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

#: frames of left context each window's quantizer re-reads, for a seam that matches the one-shot decode
CONTEXT_FRAMES = 16
#: fewest frames in a window: ~0.37 s of S1 audio, enough for the codec's first convolutions
SMALLEST_FIRST = 8
#: no window holds more frames than this (~3 s of S1 audio): the last window is decoded after the
#: sentence is generated, so a larger one saves context but delays the end of every response
LARGEST_WINDOW = 64
#: S1's codec frames per second of audio (44.1 kHz / 2048 samples per frame)
FRAMES_PER_SECOND = 44100 / 2048
#: frames S1 speaks per character of text: ~21.5 frames/s against ~15 characters/s of speech
FRAMES_PER_CHARACTER = 1.5
#: a device is trusted to keep pace only with this margin on its measured or planned speed
SPEED_MARGIN = 0.8


@dataclass(frozen=True)
class WindowPlan:
    """How one sentence's codes become audio pieces. ``pace``: frames the device makes while one plays
    (its trusted speed over the codec's frame rate); 2 doubles each window."""

    first: int
    pace: float = 2.0
    context: int = CONTEXT_FRAMES
    largest: int = LARGEST_WINDOW

    def sizes(self) -> Iterator[int]:
        """New frames in each window, in order, for ever.

        Playback starts when the first window is out. When ``made`` frames are out, the next window of
        ``w`` frames is ready after the device makes them, ``w / pace`` frames of playing time later;
        by then playback has used ``(made + w - first) / pace`` frames since it started, and must not
        have run past ``made``: ``w <= made * (pace - 1) + first``.
        """
        size, made = self.first, 0
        while True:
            yield size
            made += size
            size = max(SMALLEST_FIRST, min(self.largest, math.floor(made * (self.pace - 1) + self.first)))


def plan_windows(text_chars: int, tokens_per_s: Optional[float], frames_per_s: float = FRAMES_PER_SECOND
                 ) -> WindowPlan:
    """The windows of a sentence of ``text_chars`` characters on a device planned at ``tokens_per_s``
    (one frame per token; unknown: assume real time)."""
    return WindowPlan(first=first_window(text_chars, tokens_per_s, frames_per_s),
                      pace=_trusted_pace(tokens_per_s, frames_per_s))


def _trusted_pace(tokens_per_s: Optional[float], frames_per_s: float) -> float:
    """Frames the device makes while one plays, at its planned speed less the margin (unknown: real time)."""
    return (tokens_per_s or frames_per_s) * SPEED_MARGIN / frames_per_s


def first_window(text_chars: int, tokens_per_s: Optional[float], frames_per_s: float = FRAMES_PER_SECOND) -> int:
    """Frames to wait for before the first audio of a sentence of ``text_chars`` characters.

    Frames arrive at ``tokens_per_s`` (one frame per token) and play at
    ``frames_per_s``. Starting playback after ``F`` frames, frame ``k`` is
    ready ``(k - F) / tokens_per_s`` after the start and played ``k /
    frames_per_s`` after it; the last frame ``N`` is the tightest when the
    device is slower than real time, so ``F >= N (1 - speed / frames_per_s)``.
    Frames come a window at a time, so a slow device waits for one smallest
    window more: then every later window of that size is in time
    (:meth:`WindowPlan.sizes`). Unknown speed: assume real time.
    """
    expected = max(1, math.ceil(text_chars * FRAMES_PER_CHARACTER))
    behind = max(0.0, 1.0 - _trusted_pace(tokens_per_s, frames_per_s))
    slack = SMALLEST_FIRST if behind > 0 else 0
    return max(SMALLEST_FIRST, min(expected, math.ceil(expected * behind) + slack))


def windows(frames: Iterable[Any], decode: Callable[[Any, int, bool], Any], plan: WindowPlan
            ) -> Iterator[tuple[Any, int]]:
    """(waveform, frames) for each window of ``frames`` (codes [K] each, in order). ``decode(codes, context,
    last)`` takes codes [K, T] whose first ``context`` frames were decoded before and returns the audio of
    the others; ``last`` tells the window decoded after the sentence ended (everything then waits on it).
    The pieces joined equal the one-shot decode up to the seams' rounding."""
    import torch

    kept: list[Any] = []  # the context and the frames not yet spoken
    spoken = 0  # frames whose audio was yielded
    total = 0
    sizes = plan.sizes()
    target = next(sizes)
    for frame in frames:
        kept.append(frame)
        total += 1
        if total - spoken >= target:
            yield decode(torch.stack(kept, dim=1), len(kept) - (total - spoken), False), total - spoken
            spoken, target = total, next(sizes)
            kept = kept[-plan.context:] if plan.context else []
    if total > spoken:
        yield decode(torch.stack(kept, dim=1), len(kept) - (total - spoken), True), total - spoken

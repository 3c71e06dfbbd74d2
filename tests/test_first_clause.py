"""A long first sentence is streamed clause first: the splitter, the seam's silence, and how the seam sounds."""

from __future__ import annotations

import numpy as np
import pytest
from voxfit.engine import AudioChunk
from voxfit.speaking.clauses import SEAM_PAD_SECONDS, split_first_clause
from voxfit.speaking.synthesis import synthesize
from voxfit.speaking.text import split_sentences

LONG_FIRST = ("When the morning train finally pulled into the station after a long delay, the passengers "
              "who had waited for hours on the cold platform cheered. Then they boarded.")


def test_a_long_first_sentence_is_cut_once_at_its_earliest_clause_mark() -> None:
    chunks = split_sentences(LONG_FIRST)
    cut, was_cut = split_first_clause(chunks)
    assert was_cut
    assert cut[0] == "When the morning train finally pulled into the station after a long delay,"
    assert cut[1] == "the passengers who had waited for hours on the cold platform cheered."
    assert cut[2:] == chunks[1:]
    assert " ".join(cut) == " ".join(chunks)  # nothing lost, nothing added


@pytest.mark.parametrize("text", [
    "Hello there, this is a short sentence.",  # short: spoken whole
    "The number 1,000,000 was written on every single page of the very old and very dusty ledger.",  # no clause mark
    "She packed her bags, locked the door and walked to the station without looking back.",  # head too short
    "The quick brown fox jumped over the lazy dog while the farmer watched from the porch, quietly.",  # tail too short
])
def test_what_is_not_cut(text: str) -> None:
    chunks = split_sentences(text)
    assert split_first_clause(chunks) == (chunks, False)


def test_only_the_first_chunk_is_cut_and_other_marks_count_too() -> None:
    text = ("The committee reviewed every proposal that arrived before the deadline; only three were chosen "
            "for the final round. The second sentence is also rather long, but it stays whole because it is second.")
    cut, was_cut = split_first_clause(split_sentences(text))
    assert was_cut and cut[0].endswith("deadline;") and len(cut) == 3
    assert cut[2].startswith("The second sentence is also rather long, but")
    assert split_first_clause([]) == ([], False)


class ToneEngine:
    """Speaks every chunk as 0.5 s of a constant non-zero sample: enough to see where silence goes."""

    backend = "tone"
    sample_rate = 1000

    def synthesize(self, text: str):
        yield AudioChunk(pcm=np.full(500, 1000, dtype=np.int16).tobytes(), sample_rate=self.sample_rate, text=text)


class Collect:
    def __init__(self) -> None:
        self.data = b""

    def write(self, pcm: bytes) -> None:
        self.data += pcm


def test_the_seam_gets_its_silence_and_it_counts_as_audio() -> None:
    sink = Collect()
    metrics = synthesize(ToneEngine(), ["head,", "tail.", "next."], sink, pauses={0: 0.1})
    samples = np.frombuffer(sink.data, dtype=np.int16)
    assert len(samples) == 1500 + 100
    assert (samples[500:600] == 0).all() and (samples[600:] != 0).all()
    assert metrics.audio_seconds == pytest.approx(1.6)


def _silence_runs(pcm: np.ndarray, rate: int, threshold: int = 300) -> list[tuple[float, float]]:
    """(start s, length s) of every quiet run longer than 50 ms."""
    quiet = np.concatenate([[False], np.abs(pcm) < threshold, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    return [(a / rate, (b - a) / rate) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a > 0.05 * rate]


@pytest.mark.slow
@pytest.mark.parametrize("sentence", [
    "When the morning train finally pulled into the station after a long delay, the passengers cheered loudly.",
    "Although the weather had been unusually cold for most of the week, the children still walked to school.",
    "The committee reviewed every proposal that had arrived before the deadline; only three were chosen.",
    "If you are reading this message on a small screen in a noisy room, please turn up the volume and listen.",
])
def test_the_seam_pauses_about_as_long_as_the_voice_does_at_that_mark(sentence: str) -> None:
    from voxfit_cpu_onnx import piper_engine
    from voxfit_cpu_onnx.piper_options import PiperOptions
    from voxfit_cpu_onnx.piper_spec import embedded_default

    voice = embedded_default()
    engine = piper_engine.load(voice.path, voice.files["config"], 1, {"enable_mem_reuse": False})
    engine.configure(PiperOptions(noise_scale=0.0, noise_w_scale=0.0))  # no sampling: durations repeat exactly
    rate = engine.sample_rate

    def speak(chunks: list[str], pauses=None) -> np.ndarray:
        sink = Collect()
        synthesize(engine, chunks, sink, pauses=pauses)
        return np.frombuffer(sink.data, dtype=np.int16)

    (head, tail), cut = split_first_clause([sentence])
    assert cut
    whole = speak([sentence])
    split = speak([head, tail], {0: SEAM_PAD_SECONDS})
    head_seconds = len(speak([head])) / rate
    # The voice's own pause at the mark: the silence in the whole sentence nearest to where the head ends.
    own = min(_silence_runs(whole, rate), key=lambda r: abs(r[0] + r[1] / 2 - head_seconds))[1]
    seam = min(_silence_runs(split, rate), key=lambda r: abs(r[0] - head_seconds + 0.25))[1]
    engine.close()
    assert abs(seam - own) <= 0.07, (seam, own)  # the seam pauses as the voice would have, within 70 ms
    assert abs(len(split) - len(whole)) / len(whole) < 0.06  # no gap, no clipped words

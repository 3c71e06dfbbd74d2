"""``voxfit tune`` against real engines: the measurer handed to :mod:`voxfit.tuning.round_robin`, and what gets cached.

Each visit loads the proposal fresh, as a new ``voxfit run`` process would,
speaks a short sentence (the first call after loading, as in a short run),
then a paragraph, and closes the engine. One engine at a time: a large model
loaded in every variant at once would not fit in memory.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from voxfit.models import EnvChange, Plan, Proposal
from voxfit.plugins import PluginHost
from voxfit.tuning.round_robin import Decision, Measurer, Sample

SHORT_TEXT = "The quick brown fox jumps over the lazy dog."
PARAGRAPH_TEXT = (
    "A short measurement tells which settings are fastest on this machine. "
    "Every proposal speaks these same sentences, in turn, several times, and starts afresh each time. "
    "What counts is the time a person waits: the session start and the speaking together, "
    "for a short sentence as for a paragraph like this one."
)
WORKLOADS = {"short sentence": SHORT_TEXT, "paragraph": PARAGRAPH_TEXT}


class _Discard:
    def write(self, pcm: bytes) -> None:
        pass


def engine_measurer(
    host: PluginHost, plan: Plan, proposals: dict[str, Proposal], clock: Callable[[], float] = time.perf_counter,
    workloads: Optional[dict[str, str]] = None,
) -> Measurer:
    from voxfit.speaking import load as runtime
    from voxfit.speaking.synthesis import synthesize
    from voxfit.speaking.text import split_sentences

    applied: list[EnvChange] = []
    texts = WORKLOADS if workloads is None else workloads

    def measure(key: str) -> Sample:
        proposal = proposals[key]
        t0 = clock()
        loaded = runtime.load_proposal(host, plan, proposal, applied)
        load_seconds = clock() - t0
        seconds: dict[str, float] = {}
        audio: dict[str, float] = {}
        try:
            for name, text in texts.items():
                metrics = synthesize(loaded.engine, split_sentences(text, proposal.chunk_chars), _Discard())
                seconds[name], audio[name] = metrics.synthesis_seconds, metrics.audio_seconds
        finally:
            loaded.engine.close()
        return Sample(load_seconds, seconds, audio)

    return measure


def cache_entries(
    decision: Decision, proposals: dict[str, Proposal], versions: Callable[[Proposal], dict[str, str]], stamp: str
) -> tuple[dict[str, dict[str, Any]], Optional[dict[str, Any]]]:
    """Per measured proposal what the plugins read back (RTF, session start, verdict), and the decision itself."""
    entries: dict[str, dict[str, Any]] = {}
    for key in decision.samples:
        p = proposals[key]
        verdict = decision.verdicts.get(key)
        if key == decision.winner:
            why = f"chosen by `voxfit tune`: {decision.reason}"
        elif key == decision.control:
            why = "the control of `voxfit tune` (the previous choice), beaten by a measured margin"
        else:
            why = verdict.reason if verdict else "measured"
        entries[key] = {
            "rtf": decision.median_rtf(key, "paragraph"),
            "load_seconds": round(decision.median_load(key), 3),
            "end_to_end_seconds": {w: round(decision.median_end_to_end(key, w), 3)
                                   for w in decision.samples[key][0].seconds},
            "ratio_to_control": {w: round(r, 3) for w, r in verdict.ratios.items()} if verdict else None,
            "verdict": why,
            "label": p.label(),
            "measured_at": stamp,
            "versions": versions(p),
        }
    if not decision.winner:
        return entries, None
    summary = {"winner": decision.winner, "control": decision.control, "reason": decision.reason,
               "rounds": decision.rounds, "measured_at": stamp}
    return entries, summary

"""The session (the public Python API): plan once, load once, speak many, and report what happened."""

from __future__ import annotations

import types

import pytest
from helpers import cpu_profile, make_host
from pydantic import BaseModel, ConfigDict, Field
from voxfit import hookimpl
from voxfit.engine import AudioChunk, EngineInfo
from voxfit.errors import UsageError
from voxfit.models import ModelSpec, Proposal
from voxfit.speaking.session import Session


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loudness: int = Field(default=100, ge=1, le=1000)


class ToyEngine:
    """Speaks one sample per character at the configured loudness; remembers what it was told."""

    backend, sample_rate = "toy-voice", 8000

    def __init__(self) -> None:
        self.loudness, self.closed = 100, False
        self.notes = ["toy: cache rebuilt at /tmp/x"]

    def configure(self, options: ToyOptions) -> None:
        self.loudness = options.loudness  # a complete set: unset means the default

    def synthesize(self, text):
        yield AudioChunk(pcm=self.loudness.to_bytes(2, "little", signed=True) * len(text), sample_rate=8000, text=text)

    def inference_modules(self):
        return []

    def close(self):
        self.closed = True


def toy_plugin(loads: list, fail_first: bool = False):
    module = types.SimpleNamespace(VOXFIT_HOOK_API="2.0")

    @hookimpl
    def register_engines(register):
        register(EngineInfo(backend="toy-voice", families=frozenset({"piper"}), options=ToyOptions))

    @hookimpl
    def default_model():
        return ModelSpec(family="piper", name="toy", source="toy plugin")  # an engine that needs no model file

    @hookimpl
    def score_config():
        best = Proposal(device="cpu", device_family="cpu", engine="toy-voice", score=2.0, reasons=["first"],
                        options={"variant": "fragile"})
        second = Proposal(device="cpu", device_family="cpu", engine="toy-voice", score=1.0, reasons=["second"])
        return [best, second]

    @hookimpl
    def load_engine(proposal):
        if fail_first and proposal.options.variant == "fragile":
            raise RuntimeError("driver exploded\nwith a second line")
        engine = ToyEngine()
        loads.append(engine)
        return engine

    module.register_engines, module.score_config, module.load_engine = register_engines, score_config, load_engine
    module.default_model = default_model
    return module


def session(loads, fail_first=False, **kw):
    host = make_host(("toy", toy_plugin(loads, fail_first)), defaults=False, allow_plugins=["toy", "test_engines"])
    return Session(host=host, settings=host.settings, hardware=cpu_profile(), **kw)


def test_speak_returns_audio_and_a_report_and_options_do_not_leak_between_requests():
    loads: list = []
    with session(loads) as tts:
        loud = tts.speak("abc", loudness=500)
        plain = tts.speak("abc")
        assert loud.pcm == (500).to_bytes(2, "little") * 3 and plain.pcm == (100).to_bytes(2, "little") * 3
        assert loud.report.options == {"loudness": 500} and plain.report.options == {}
        assert plain.report.metrics.audio_seconds == pytest.approx(3 / 8000)
        assert len(loads) == 1  # loaded once, spoke twice
    assert loads[0].closed


def test_session_defaults_apply_to_every_request_and_a_request_overrides_them():
    loads: list = []
    with session(loads, options={"loudness": 7}) as tts:
        assert tts.speak("a").pcm == (7).to_bytes(2, "little")
        assert tts.speak("a", loudness=9).pcm == (9).to_bytes(2, "little")
        assert tts.speak("a").pcm == (7).to_bytes(2, "little")


def test_bad_options_are_one_line_before_anything_is_loaded():
    loads: list = []
    with pytest.raises(UsageError, match=r"option pitch does not apply to the toy-voice engine \(it takes: loudness\)"):
        session(loads, options={"pitch": 3})
    with pytest.raises(UsageError, match="option loudness='loud' for the toy-voice engine"):
        session(loads, options={"loudness": "loud"})
    assert loads == []  # validated against the registered options model, before loading
    with session(loads) as tts, pytest.raises(UsageError, match="loudness=0"):
        tts.speak("abc", loudness=0)


def test_stream_yields_each_sentence_as_it_is_made_and_stops_when_closed_early():
    loads: list = []
    with session(loads) as tts:
        chunks = tts.stream("One. Two. Three.")
        first = next(chunks)
        assert first.text == "One."
        chunks.close()  # a client that left: nothing more is synthesized
        assert tts.speak("Four.").pcm  # the session is still usable


def test_everything_after_the_plan_is_in_the_report():
    loads: list = []
    with session(loads, fail_first=True) as tts:
        report = tts.speak("abc").report
    lines = report.lines()
    assert lines[0].startswith("with toy: toy-voice, cpu, fp32") and "after falling back from 1 proposal(s)" in lines[0]
    assert any(line.startswith("  fell back: toy: toy-voice, cpu, fp32, fragile:") for line in lines)
    assert "  plugin problem: toy.load_engine: RuntimeError: driver exploded" in lines
    assert "  note: toy: cache rebuilt at /tmp/x" in lines
    data = report.as_dict()
    assert data["problems"] == [{"plugin": "toy", "hook": "load_engine", "error": "RuntimeError: driver exploded"}]
    assert data["notes"] == ["toy: cache rebuilt at /tmp/x"] and data["metrics"]["chunks"] == 1


def test_a_session_can_load_a_plan_made_before_without_planning_again():
    loads: list = []
    with session(loads) as first:
        with Session(host=first.host, settings=first.host.settings, plan=first.plan) as second:
            assert second.plan is first.plan and len(loads) == 2  # one plan, two engines
            assert second.speak("ab").pcm == (100).to_bytes(2, "little") * 2

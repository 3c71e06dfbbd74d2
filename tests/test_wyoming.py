"""`voxfit serve --wyoming`: Home Assistant's protocol, through the `wyoming` package's own client.

A real server process with the embedded voice, HTTP and Wyoming at once on free
loopback ports (Wyoming alone in the last test): describe, synthesize, streaming
synthesize with text split mid-word, an unknown voice, over-long text, bad
events, and a client that leaves mid-stream while the server goes on serving.
Every Wyoming request shares the HTTP server's queue and metrics.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time

import httpx
import pytest
from helpers import embedded_voice
from serve_helpers import BIN, ServerProcess, clean_env
from voxfit_cpu_onnx.piper_spec import embedded_default
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

pytestmark = pytest.mark.timeout(180)

VOICE = "en_US-joe-medium"
RATE = 22050
LONG = " ".join(f"This is sentence number {i}, which keeps the worker busy for a while." for i in range(12))


class Served(ServerProcess):
    """`voxfit serve ARGS` with Wyoming on, until it printed the addresses it listens on."""

    def __init__(self, args: list[str], cwd, want_http: bool = True, timeout: float = 90) -> None:
        super().__init__(args, clean_env(VOXFIT_CACHE_DIR=str(cwd / "cache")), cwd, timeout,
                         want_http=want_http, want_wyoming=True)


TRIO = "en_GB-trio-medium"


def trio_voice(folder) -> str:
    """The embedded voice's weights under a config that says three named speakers, British English.

    Listed by describe, and its speakers checked by name; never spoken (the weights have one speaker).
    """
    spec = embedded_default()
    (folder / f"{TRIO}.onnx").symlink_to(spec.files["model"])
    config = json.loads(spec.files["config"].read_text())
    config.update(num_speakers=3, speaker_id_map={"ann": 0, "bob": 1, "cy": 2}, language={"code": "en_GB"})
    (folder / f"{TRIO}.onnx.json").write_text(json.dumps(config))
    return str(folder / f"{TRIO}.onnx")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("wyoming")
    proc = Served(["--port", "0", "--wyoming", "tcp://127.0.0.1:0", "--max-input-chars", "1200",
                   "--model", str(embedded_voice()), "--model", trio_voice(work)], work)
    yield proc
    assert proc.stop() == 0
    log = proc.log()
    assert "Traceback" not in log and "exception was never retrieved" not in log, log[-3000:]


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def client(server) -> AsyncTcpClient:
    return AsyncTcpClient(server.host, server.port, connect_timeout=10, read_timeout=60)


async def audio_until(c: AsyncTcpClient, last: str, limit: int = 20_000) -> list[Event]:
    """Events up to and including one of type ``last`` (bounded)."""
    events = []
    for _ in range(limit):
        event = await c.read_event()
        assert event is not None, f"the server closed the connection after {[e.type for e in events]}"
        events.append(event)
        if event.type == last or Error.is_type(event.type):
            return events
    raise AssertionError(f"no {last} in {limit} events")


def seconds_of(events: list[Event]) -> float:
    return sum(len(AudioChunk.from_event(e).audio) for e in events if AudioChunk.is_type(e.type)) / 2 / RATE


def recent(server, route: str = "wyoming") -> list[dict]:
    data = httpx.get(f"{server.url}/v1/requests/recent?limit=200", timeout=10).json()["requests"]
    return [r for r in data if r["route"] == route]


def test_describe_lists_every_voice_with_streaming(server):
    async def go():
        async with client(server) as c:
            await c.write_event(Describe().event())
            return await c.read_event()

    event = run(go())
    assert Info.is_type(event.type)
    info = Info.from_event(event)
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.name == "voxfit" and program.installed and program.supports_synthesize_streaming
    assert program.version
    names = [v.name for v in program.voices]
    listed = httpx.get(f"{server.url}/v1/audio/voices").json()["voices"]
    assert names == [v["voice"] for v in listed if "alias_of" not in v]  # OpenAI's names are HTTP aliases
    voice = program.voices[0]
    assert voice.name == VOICE and voice.languages == ["en_US"] and voice.installed
    assert voice.attribution.name and voice.speakers is None  # a one-speaker voice
    assert voice.version == "1.0.0"  # the voice config's piper_version
    trio = program.voices[1]
    assert trio.name == TRIO and trio.languages == ["en_GB"]
    assert [s.name for s in trio.speakers] == ["ann", "bob", "cy"]


def test_a_speaker_is_checked_by_the_voice_and_a_language_picks_a_voice(server):
    async def go():
        async with client(server) as c:
            await c.write_event(Synthesize(text="Hi.", voice=SynthesizeVoice(name=TRIO, speaker="zed")).event())
            unknown = await c.read_event()
            await c.write_event(Synthesize(text="Hi.", voice=SynthesizeVoice(language="en-US")).event())
            return unknown, await audio_until(c, "audio-stop")

    unknown, events = run(go())
    assert Error.is_type(unknown.type)
    error = Error.from_event(unknown)
    assert error.code == "bad_input" and "zed" in error.text and "\n" not in error.text
    assert AudioStop.is_type(events[-1].type) and seconds_of(events) > 0.3
    assert recent(server)[0]["voice"] == VOICE  # en-US: the voice that speaks it


def test_synthesize_streams_audio_and_shares_the_metrics(server):
    before = len(recent(server))

    async def go():
        async with client(server) as c:
            await c.write_event(Synthesize(text="Hello from Home Assistant. A second sentence.",
                                           voice=SynthesizeVoice(name=VOICE)).event())
            return await audio_until(c, AudioStop().event().type)

    events = run(go())
    assert AudioStart.is_type(events[0].type) and AudioStop.is_type(events[-1].type)
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (RATE, 2, 1)
    chunks = [e for e in events if AudioChunk.is_type(e.type)]
    assert len(chunks) >= 2 and all(AudioChunk.from_event(e).rate == RATE for e in chunks)
    seconds = seconds_of(events)
    assert seconds > 2.0
    records = recent(server)
    assert len(records) == before + 1
    assert records[0]["status"] == "ok" and records[0]["audio_seconds"] == pytest.approx(seconds, abs=1e-3)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert f'voxfit_speech_requests_total{{outcome="ok",route="wyoming",voice="{VOICE}"}}' in metrics


def test_streaming_synthesis_speaks_each_sentence_as_it_completes(server):
    pieces = ["Hel", "lo there. Th", "is is str", "eamed, sen", "tence by sen", "tence! And the l", "ast one"]
    text = "".join(pieces)
    before = len(recent(server))

    async def go():
        async with client(server) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name=VOICE)).event())
            for piece in pieces[:2]:
                await c.write_event(SynthesizeChunk(text=piece).event())
            # "Hello there. " is complete: its audio comes before any more text is sent.
            first = [await c.read_event(), await c.read_event()]
            for piece in pieces[2:]:
                await c.write_event(SynthesizeChunk(text=piece).event())
            await c.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=VOICE)).event())  # ignored
            await c.write_event(SynthesizeStop().event())
            return first + await audio_until(c, SynthesizeStopped().event().type)

    events = run(go())
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[1] == "audio-chunk"
    assert types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert types.count("audio-start") == 1 and types.count("audio-stop") == 1 and "error" not in types
    records = recent(server)[: len(recent(server)) - before]
    # Three sentences, each spoken whole: no piece of a word was spoken alone, nothing twice.
    assert [r["characters"] for r in reversed(records)] == [len("Hello there. "),
                                                             len("This is streamed, sentence by sentence! "),
                                                             len("And the last one")]
    assert all(r["status"] == "ok" for r in records)
    assert seconds_of(events) == pytest.approx(sum(r["audio_seconds"] for r in records), abs=1e-3)


def test_errors_are_events_and_the_connection_goes_on(server):
    async def go():
        async with client(server) as c:
            out = {}
            await c.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody")).event())
            out["voice"] = await c.read_event()
            await c.write_event(Synthesize(text="Long. " * 300).event())
            out["long"] = await c.read_event()
            await c.write_event(Synthesize(text="   ").event())
            out["empty"] = await c.read_event()
            await c.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(language="xx_XX")).event())
            out["language"] = await c.read_event()
            await c.write_event(SynthesizeChunk(text="no start").event())
            out["chunk"] = await c.read_event()
            await c.write_event(Event(type="synthesize", data={"voice": {"name": VOICE}}))  # no text
            out["malformed"] = await c.read_event()
            await c.write_event(Event(type="synthesize", data={"text": "Hi.", "voice": {"name": 5}}))
            out["voice_type"] = await c.read_event()
            c._writer.write(b"this is not json\n")
            out["garbage"] = await c.read_event()
            await c.write_event(Event(type="ping-unknown-to-tts"))  # ignored, no answer
            await c.write_event(Describe().event())
            out["still"] = await c.read_event()
            return out

    out = run(go())
    for key in ("voice", "long", "empty", "language", "chunk", "malformed", "voice_type", "garbage"):
        assert Error.is_type(out[key].type), (key, out[key])
    errors = {k: Error.from_event(v) for k, v in out.items() if Error.is_type(v.type)}
    assert errors["voice"].code == "voice_not_found" and f"offers {VOICE}" in errors["voice"].text
    assert errors["long"].code == "input_too_long" and "at most 1200" in errors["long"].text
    assert "nothing to say" in errors["empty"].text
    assert errors["language"].code == "voice_not_found" and "en_US" in errors["language"].text
    assert "without synthesize-start" in errors["chunk"].text
    assert errors["malformed"].code == "bad_event" and errors["garbage"].code == "bad_event"
    assert errors["voice_type"].code == "bad_event" and "must be strings" in errors["voice_type"].text
    assert all("\n" not in e.text and "Traceback" not in e.text for e in errors.values())
    assert Info.is_type(out["still"].type)


def test_a_stream_in_a_failed_voice_answers_once_and_stops_cleanly(server):
    async def go():
        async with client(server) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody")).event())
            first = await c.read_event()
            await c.write_event(SynthesizeChunk(text="Some text. More").event())
            await c.write_event(SynthesizeStop().event())
            return first, await c.read_event()

    first, last = run(go())
    assert Error.is_type(first.type) and Error.from_event(first).code == "voice_not_found"
    assert SynthesizeStopped.is_type(last.type)


def test_a_client_that_leaves_mid_stream_frees_the_worker(server):
    async def leave():
        async with client(server) as c:
            await c.write_event(Synthesize(text=LONG).event())
            assert AudioStart.is_type((await c.read_event()).type)
            assert AudioChunk.is_type((await c.read_event()).type)
        # the connection is closed here, mid-stream

    run(leave())
    t0 = time.monotonic()

    async def next_client():
        async with client(server) as c:
            await c.write_event(Synthesize(text="Still serving.").event())
            return await audio_until(c, "audio-stop")

    events = run(next_client())
    waited = time.monotonic() - t0
    assert AudioStop.is_type(events[-1].type) and seconds_of(events) > 0.5
    deadline = time.monotonic() + 10
    while True:
        gone = [r for r in recent(server) if r["characters"] == len(LONG)]
        if gone or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert gone and gone[0]["status"] == "cancelled"
    assert gone[0]["audio_seconds"] < 20  # stopped at a sentence, not spoken to the end (~50 s)
    assert waited < 20


def test_wyoming_alone_and_the_drain(tmp_path):
    proc = Served(["--no-http", "--wyoming", "tcp://127.0.0.1:0"], tmp_path, want_http=False)
    try:
        assert not any(line.startswith("listening on http") for line in proc.stdout)

        async def go():
            async with AsyncTcpClient(proc.host, proc.port, connect_timeout=10, read_timeout=60) as c:
                await c.write_event(Synthesize(text="Only Wyoming here.").event())
                return await audio_until(c, "audio-stop")

        assert seconds_of(run(go())) > 0.5
    finally:
        rc = proc.stop()
    assert rc == 0 and "drained" in proc.log()


def test_no_http_without_wyoming_is_refused(tmp_path):
    result = subprocess.run([str(BIN / "voxfit"), "serve", "--no-http"], capture_output=True, text=True, timeout=60,
                            env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path)), cwd=tmp_path)
    assert result.returncode != 0 and "--no-http leaves nothing to serve" in result.stderr
    assert "Traceback" not in result.stderr
    bad = subprocess.run([str(BIN / "voxfit"), "serve", "--wyoming", "http://x:1"], capture_output=True, text=True,
                         timeout=60, env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path)), cwd=tmp_path)
    assert bad.returncode != 0 and "--wyoming takes tcp://HOST:PORT" in bad.stderr


# -- the pieces, without a server ----------------------------------------------------------


def test_complete_sentences_waits_for_the_end_of_a_sentence_and_bounds_the_buffer():
    from voxfit.server.wyoming import complete_sentences

    assert complete_sentences("Hello there. How a", 100) == (["Hello there. "], "How a")
    assert complete_sentences("It costs 3.5 euros", 100) == ([], "It costs 3.5 euros")  # no space after the dot
    assert complete_sentences("One! Two? Thr", 100) == (["One! Two? "], "Thr")
    assert complete_sentences("“Quoted.” Next", 100) == (["“Quoted.” "], "Next")
    assert complete_sentences("你好。再见", 100) == (["你好。"], "再见")
    assert complete_sentences("A list\nnext", 100) == (["A list\n"], "next")
    ready, rest = complete_sentences("word " * 30, 40)  # 150 characters and no sentence end
    assert all(len(piece) <= 40 for piece in ready) and "".join(ready) + rest == "word " * 30
    assert len(rest) <= 40


@pytest.mark.parametrize("raw, message, fatal", [
    (b"not json\n", "not valid JSON", False),
    (b'{"data": {}}\n', "has no type", False),
    (b'{"type": "synthesize", "data_length": 99999999}\n', "data_length 99999999", True),
    (b'{"type": "synthesize", "payload_length": -1}\n', "payload_length -1", True),
    (b'{"type": "synthesize", "data_length": 3}\n[1]', "not a JSON object", False),
    (b"x" * 70_000 + b"\n", "header is over", True),
])
def test_events_are_read_within_bounds(raw, message, fatal):
    from voxfit.server.wyoming import LINE_LIMIT, BadEvent, read_event

    async def go():
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_event(reader)

    with pytest.raises(BadEvent) as caught:
        run(go(), timeout=10)
    assert message in str(caught.value) and caught.value.fatal is fatal


def test_languages_and_speakers_come_from_the_model_spec_then_the_name():
    from types import SimpleNamespace

    from voxfit.server.wyoming import voice_languages, voice_speakers

    def voice(name, **properties):
        return SimpleNamespace(name=name, plan=SimpleNamespace(model=SimpleNamespace(properties=properties)))

    assert voice_languages(voice("x", languages="de_DE, en_GB")) == ["de_DE", "en_GB"]
    assert voice_languages(voice("fr_FR-siwis-medium")) == ["fr_FR"]
    assert voice_languages(voice("openaudio-s1-mini")) == []
    assert voice_speakers(voice("x", speakers="anna,ben", num_speakers=2)) == ["anna", "ben"]
    assert voice_speakers(voice("x", num_speakers=3)) == ["0", "1", "2"]
    assert voice_speakers(voice("x", num_speakers=1)) is None


def test_the_readme_home_assistant_commands_work(tmp_path):
    """The Wyoming page's commands as written, on loopback and free ports instead of 0.0.0.0:10200."""
    import shlex

    from helpers import REPO

    page = (REPO / "docs" / "wyoming.md").read_text()
    block = re.search(r"```sh\n(.*?)```", page, flags=re.S).group(1)
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    assert commands == ["voxfit serve --wyoming tcp://0.0.0.0:10200",
                        "voxfit serve --no-http --wyoming tcp://0.0.0.0:10200"]
    for command in commands:
        args = [a.replace("tcp://0.0.0.0:10200", "tcp://127.0.0.1:0") for a in shlex.split(command)[2:]]
        proc = Served(args + ["--port", "0"], tmp_path, want_http="--no-http" not in args)
        try:
            async def go(host: str, port: int):
                async with AsyncTcpClient(host, port, connect_timeout=10, read_timeout=60) as c:
                    await c.write_event(Describe().event())
                    return await c.read_event()

            assert Info.is_type(run(go(proc.host, proc.port)).type)
            assert bool(proc.url) == ("--no-http" not in args)
        finally:
            assert proc.stop() == 0

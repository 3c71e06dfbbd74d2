"""Home Assistant's Wyoming protocol on the server's voices, queue, limits and metrics.

``voxfit serve --wyoming tcp://127.0.0.1:10200`` listens for Wyoming clients
beside HTTP (or alone, with ``--no-http``), in the same process and event loop:
a Wyoming request is a :class:`~voxfit.server.pool.Job` on the same per-voice
queue as an HTTP one, checked against the same limits, and recorded in the same
metrics and request log (route ``wyoming``).

* ``describe`` -> ``info``: one TTS program listing every voice served (name,
  languages, speakers, attribution, installed, version), with
  ``supports_synthesize_streaming``.
* ``synthesize`` (optional voice name or language, and speaker) ->
  ``audio-start``, ``audio-chunk``s as each sentence is made, ``audio-stop``.
* ``synthesize-start``, ``synthesize-chunk``s, ``synthesize-stop``: the text is
  buffered and each sentence is spoken as soon as it is complete (chunks may end
  mid-word); the stop speaks the rest and answers ``audio-stop`` and
  ``synthesize-stopped``. The ``synthesize`` Home Assistant sends inside a
  stream for older servers is ignored.

Every failure is answered with an ``error`` event (one line, a code) and the
connection goes on; a client that leaves mid-stream has its synthesis stopped
at the next sentence. Events are read with bounds (a header line, its data and
payload), which the ``wyoming`` package's own reader does not have; writing and
every event class are the package's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from typing import Any, Optional
from urllib.parse import urlparse

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from voxfit import __version__
from voxfit.errors import UsageError, one_line
from voxfit.server.client_input import InputRefused, parse_json
from voxfit.server.errors import ApiError
from voxfit.server.lifecycle import OK, Outcome, SpeechRequest, outcome_of
from voxfit.server.pool import ClientGone
from voxfit.speaking.text import SENTENCE_END, has_speakable

ROUTE = "wyoming"
#: Longest event header line, and the most event data and payload one event may carry.
LINE_LIMIT = 64 * 1024
PAYLOAD_LIMIT = 4 * 2**20
#: Connections served at once; more are told so and closed (each idle one costs little, but not nothing).
MAX_CONNECTIONS = 256
#: Samples per audio-chunk event (other Wyoming TTS servers send 1024; a little larger: fewer events).
SAMPLES_PER_CHUNK = 4096
#: Where a streamed text can be cut: the sentence ends every splitter uses (voxfit.speaking.text), or a newline.
_BOUNDARY = re.compile(rf"(?:{SENTENCE_END.pattern})\s*|\n+")
_LANGUAGE = re.compile(r"^([a-z]{2,3}(?:[_-][A-Z]{2})?)[-_]")


class BadEvent(Exception):
    """An event that cannot be read; ``fatal`` when the stream cannot be followed after it."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def parse_uri(uri: str) -> tuple[str, int]:
    """(host, port) of ``tcp://HOST:PORT`` (port 0: any free one)."""
    parsed = urlparse(uri.strip())
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None or parsed.path not in ("", "/"):
        raise UsageError(f"--wyoming takes tcp://HOST:PORT (e.g. tcp://127.0.0.1:10200), got {uri!r}")
    return parsed.hostname, port


def bind(uri: str) -> socket.socket:
    from voxfit.server.sockets import bind as bind_tcp

    host, port = parse_uri(uri)
    return bind_tcp(host, port)


def uri_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


async def read_event(reader: asyncio.StreamReader) -> Optional[Event]:
    """The next event, or None at the end of the stream; :class:`BadEvent` for one that cannot be read."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError: a header line over LINE_LIMIT
        raise BadEvent(f"an event header is over {LINE_LIMIT} bytes", fatal=True) from None
    if not line or not line.endswith(b"\n"):
        return None
    try:
        header = parse_json(line, "an event header", max_bytes=LINE_LIMIT)
    except InputRefused as exc:
        raise BadEvent(str(exc)) from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise BadEvent("an event header has no type")
    lengths = [header.get("data_length") or 0, header.get("payload_length") or 0]
    for name, value in zip(("data_length", "payload_length"), lengths, strict=True):
        if not isinstance(value, int) or value < 0 or value > PAYLOAD_LIMIT:
            raise BadEvent(f"event {header['type']}: {name} {value!r} is not 0 to {PAYLOAD_LIMIT}", fatal=True)
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise BadEvent(f"event {header['type']}: data is not an object")
    if lengths[0]:
        raw = await reader.readexactly(lengths[0])
        try:
            more = parse_json(raw, f"event {header['type']}: its data", max_bytes=PAYLOAD_LIMIT)
        except InputRefused as exc:
            raise BadEvent(str(exc)) from None
        if not isinstance(more, dict):
            raise BadEvent(f"event {header['type']}: its data is not a JSON object")
        data.update(more)
    payload = await reader.readexactly(lengths[1]) if lengths[1] else None
    return Event(type=header["type"], data=data, payload=payload)


def complete_sentences(buffer: str, limit: int) -> tuple[list[str], str]:
    """The complete sentences at the start of ``buffer`` (as one piece) and the rest, still being written.

    A piece longer than ``limit`` with no boundary in it is cut at its last space (or at ``limit``).
    """
    out: list[str] = []
    while True:
        last = None
        for match in _BOUNDARY.finditer(buffer):
            if match.end() > limit and last is not None:
                break
            last = match
        if last is not None and last.end() <= limit:
            out.append(buffer[: last.end()])
            buffer = buffer[last.end():]
            continue
        if len(buffer) <= limit:
            return out, buffer
        cut = buffer.rfind(" ", 0, limit)
        cut = cut if cut > 0 else limit
        out.append(buffer[:cut])
        buffer = buffer[cut:]


# -- what info advertises ------------------------------------------------------


def voice_languages(voice: Any) -> list[str]:
    """The languages a voice speaks: what its model format says (``languages``), else its name's prefix (en_US-...)."""
    given = voice.plan.model.properties.get("languages")
    if isinstance(given, str) and given.strip():
        return [part.strip() for part in given.split(",") if part.strip()]
    match = _LANGUAGE.match(voice.name)
    return [match.group(1).replace("-", "_")] if match else []


def voice_speakers(voice: Any) -> Optional[list[str]]:
    """Speaker names of a multi-speaker voice (``speakers``; else ids as text from ``num_speakers``), else None."""
    properties = voice.plan.model.properties
    given = properties.get("speakers")
    if isinstance(given, str) and given.strip():
        return [s.strip() for s in given.split(",") if s.strip()]
    count = properties.get("num_speakers")
    if isinstance(count, int) and count > 1:
        return [str(i) for i in range(count)]
    return None


def describe(state: Any) -> Info:
    voices = []
    for name in state.order:
        voice = state.voices[name]
        spec = voice.plan.model
        speakers = voice_speakers(voice)
        who = str(spec.properties.get("attribution") or f"{spec.family} voice ({spec.source})")
        voices.append(TtsVoice(
            name=name, description=f"{name}: {voice.sessions[0].loaded.proposal.label()}",
            attribution=Attribution(name=who, url=str(spec.properties.get("url") or "")),
            installed=True, version=str(spec.properties["version"]) if spec.properties.get("version") else None,
            languages=voice_languages(voice),
            speakers=[TtsVoiceSpeaker(name=s) for s in speakers] if speakers else None))
    program = TtsProgram(
        name="voxfit", description="voxfit: neural text to speech, run the way this machine runs it best",
        attribution=Attribution(name="voxfit", url=""), installed=True, version=__version__, voices=voices,
        supports_synthesize_streaming=True)
    return Info(tts=[program])


# -- one connection --------------------------------------------------------------


class _Failed(Exception):
    """A request that failed: answered with an error event (``code``), the connection goes on."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _parse(kind: Any, event: Event) -> Any:
    """The package's event class from an event, or :class:`_Failed` naming what is wrong with it."""
    try:
        parsed = kind.from_event(event)
        voice = getattr(parsed, "voice", None)
        if voice is not None and not (all(isinstance(v, (str, type(None))) for v in (voice.name, voice.language))
                                      and isinstance(voice.speaker, (str, int, type(None)))):
            raise TypeError("voice name and language must be strings, speaker a string or a number")
        return parsed
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _Failed(f"{event.type}: malformed event ({one_line(exc)})", "bad_event") from None


class Connection:
    def __init__(self, service: "WyomingService", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.service, self.state = service, service.state
        self.reader, self.writer = reader, writer
        self.stream: Optional[dict[str, Any]] = None  # the synthesize-start in progress

    async def write(self, event: Event) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the client left")
        await async_write_event(event, self.writer)

    async def error(self, message: str, code: str) -> None:
        await self.write(Error(text=" ".join(message.split()), code=code).event())

    async def run(self) -> None:
        try:
            for _ in iter(int, 1):  # until the client leaves or the server stops
                try:
                    event = await read_event(self.reader)
                except BadEvent as exc:
                    await self.error(str(exc), "bad_event")
                    if exc.fatal:
                        return
                    continue
                if event is None:
                    return
                try:
                    await self.handle(event)
                except _Failed as exc:
                    await self.error(str(exc), exc.code)
                except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # noqa: BLE001 - answered in one line; the server goes on
                    self.state.metrics.echo(f"wyoming: {event.type}: internal error: {one_line(exc)}")
                    await self.error(f"internal error: {one_line(exc)}", "internal_error")
        except (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError):
            pass  # the client left: its synthesis was stopped and recorded
        finally:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 2)

    async def handle(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write(describe(self.state).event())
        elif SynthesizeStart.is_type(event.type):
            await self.start(event)
        elif SynthesizeChunk.is_type(event.type):
            await self.chunk(event)
        elif SynthesizeStop.is_type(event.type):
            await self.stop()
        elif Synthesize.is_type(event.type):
            if self.stream is not None:
                return  # Home Assistant also sends the whole text inside a stream, for older servers
            request = _parse(Synthesize, event)
            if not isinstance(request.text, str):
                raise _Failed("synthesize: text must be a string", "bad_event")
            voice, options = self.voice(request.voice)
            text = self.checked(request.text)
            started = await self.speak(voice, text, options, started=False)
            if not started:  # nothing was spoken (no failure either): still a complete answer
                await self.write(AudioStart(rate=voice.sample_rate, width=2, channels=1).event())
            await self.write(AudioStop().event())
        # Other events (ping, audio from a satellite...) are not for a TTS server: ignored, as Wyoming servers do.

    # -- streaming --

    async def start(self, event: Event) -> None:
        request = _parse(SynthesizeStart, event)
        self.stream = {"buffer": "", "started": False, "failed": False}
        voice, options = self.voice(request.voice)  # on error: the stream is kept, failed, until its stop
        self.stream.update(voice=voice, options=options)

    async def chunk(self, event: Event) -> None:
        if self.stream is None:
            raise _Failed("synthesize-chunk without synthesize-start", "bad_event")
        text = _parse(SynthesizeChunk, event).text
        if not isinstance(text, str):
            raise _Failed("synthesize-chunk: text must be a string", "bad_event")
        stream = self.stream
        if "voice" not in stream or stream["failed"]:
            return  # its error was answered already
        stream["buffer"] += text
        ready, stream["buffer"] = complete_sentences(stream["buffer"], self.state.settings.max_input_chars)
        for piece in ready:
            await self.speak_streamed(piece)

    async def stop(self) -> None:
        stream, self.stream = self.stream, None
        if stream is None:
            raise _Failed("synthesize-stop without synthesize-start", "bad_event")
        try:
            if "voice" in stream and not stream["failed"] and stream["buffer"].strip():
                self.stream = stream  # speak_streamed reads it
                await self.speak_streamed(stream["buffer"])
        except _Failed as exc:  # answered, and the stream still ends as the client expects
            await self.error(str(exc), exc.code)
        finally:
            self.stream = None
        if stream.get("started"):
            await self.write(AudioStop().event())
        await self.write(SynthesizeStopped().event())

    async def speak_streamed(self, text: str) -> None:
        stream = self.stream
        assert stream is not None
        if not has_speakable(text):
            return
        voice = stream["voice"]
        try:
            text = self.checked(text)
            stream["started"] = await self.speak(voice, text, stream["options"], started=stream["started"])
        except _Failed:
            stream["failed"] = True
            raise

    # -- shared --

    def voice(self, wanted: Optional[SynthesizeVoice]) -> tuple[Any, Any]:
        """The voice a request names (by name, by language, or the default) and its options, validated once."""
        from voxfit.server.bodies import voice_options

        state = self.state
        try:
            if wanted is not None and wanted.name:
                voice = state.voice(wanted.name)
            elif wanted is not None and wanted.language:
                voice = self._by_language(wanted.language)
            else:
                voice = state.voice(None)
            given: dict[str, Any] = {}
            if wanted is not None and wanted.speaker not in (None, ""):
                option = voice.registry.speaker_option_for(voice.engine)
                if not option:
                    raise _Failed(f"voice {voice.name} has one speaker (engine {voice.engine})", "bad_request")
                speaker = str(wanted.speaker)
                given[option] = int(speaker) if speaker.isdigit() else speaker
            return voice, voice_options(voice, given, None)
        except ApiError as exc:
            raise _Failed(exc.message, exc.code or "bad_request") from None

    def _by_language(self, language: str) -> Any:
        want = language.replace("-", "_").lower()
        for name in self.state.order:
            voice = self.state.voices[name]
            for spoken in voice_languages(voice):
                have = spoken.replace("-", "_").lower()
                if have == want or have.split("_")[0] == want or want.split("_")[0] == have:
                    return voice
        offered = sorted({lang for n in self.state.order for lang in voice_languages(self.state.voices[n])})
        raise _Failed(f"no voice speaks {language!r}: this server's voices speak {', '.join(offered) or 'nothing'}",
                      "voice_not_found")

    def checked(self, text: str) -> str:
        try:
            return self.state.check_text(text, "text")
        except ApiError as exc:
            raise _Failed(exc.message, exc.code or "bad_request") from None

    async def speak(self, voice: Any, text: str, options: Any, started: bool) -> bool:
        """One request through the server's lifecycle; its audio written as it is made.

        ``audio-start`` goes out with the first audio unless ``started``, so a request refused or failed
        before any audio is answered by its ``error`` alone. Returns whether ``audio-start`` has been sent.
        """
        life = SpeechRequest(self.state, ROUTE, voice, text, options)
        outcome = Outcome("cancelled", 499, "client_gone", "the client left")
        chunks = life.audio()
        try:
            async for chunk in chunks:
                started = await self._write_audio(voice.sample_rate, chunk.pcm, started, life)
            outcome = OK
            return started
        except ClientGone:
            return started
        except _SlowReader as exc:
            outcome = Outcome("timeout", 504, "timeout", str(exc))
            raise ConnectionResetError(str(exc)) from None
        except (ConnectionError, asyncio.IncompleteReadError):
            raise  # the client left: recorded as cancelled
        except Exception as exc:  # noqa: BLE001 - every failure is mapped by the lifecycle, once
            outcome = outcome_of(exc, life.job)
            raise _Failed(outcome.message, outcome.code) from None
        finally:
            life.leave()  # a no-op once done; else the worker stops at its next sentence
            with contextlib.suppress(Exception):
                await chunks.aclose()
            life.finish(outcome)

    async def _write_audio(self, rate: int, pcm: bytes, started: bool, life: SpeechRequest) -> bool:
        events = [] if started else [AudioStart(rate=rate, width=2, channels=1).event()]
        step = SAMPLES_PER_CHUNK * 2
        events += [AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i:i + step]).event()
                   for i in range(0, len(pcm), step)]
        for event in events:
            try:  # a client that stops reading holds nothing past the request's deadline
                await asyncio.wait_for(self.write(event), max(1.0, life.job.remaining()))
            except asyncio.TimeoutError:
                raise _SlowReader(f"the client read nothing for {life.job.timeout:g} s "
                                  "(VOXFIT_REQUEST_TIMEOUT)") from None
        return True


class _SlowReader(Exception):
    """A client that stopped reading audio: its request ends at its deadline."""


# -- the listener ------------------------------------------------------------------


class WyomingService:
    """The Wyoming listener on the server's state, in the server's event loop."""

    def __init__(self, state: Any, sock: socket.socket) -> None:
        self.state, self.sock = state, sock
        self.server: Optional[asyncio.AbstractServer] = None
        self.connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, sock=self.sock, limit=LINE_LIMIT)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.connections) >= MAX_CONNECTIONS:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(async_write_event(Error(
                    text=f"this server serves at most {MAX_CONNECTIONS} Wyoming connections at once; retry later",
                    code="too_many_connections").event(), writer), 5)
            writer.close()
            return
        self.connections.add(task)
        try:
            await Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            writer.close()
            raise
        finally:
            self.connections.discard(task)

    async def stop(self, timeout: float = 5.0) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=timeout)


def run_services(server: Any, http_sockets: list[socket.socket], wyoming_sock: socket.socket, state: Any) -> None:
    """uvicorn (on ``http_sockets``, maybe none: it still handles the signals and the drain) and the
    Wyoming listener in one event loop, until drained."""
    service = WyomingService(state, wyoming_sock)

    async def main() -> None:
        await service.start()
        try:
            await server.serve(sockets=http_sockets)
        finally:
            await service.stop()

    asyncio.run(main())

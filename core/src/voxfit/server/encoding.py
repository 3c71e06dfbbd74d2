"""Audio formats for the HTTP API, encoded as the audio is made.

Every encoder takes 16-bit mono PCM at the voice's rate, chunk by chunk, and
returns the bytes that can be sent now, so a response can start with the first
sentence. Compressed formats go through libsndfile (``soundfile``: FLAC, MP3
through LAME, Ogg/Opus through libopus) or, for AAC, which libsndfile cannot
write, FFmpeg's native AAC encoder as PyAV's wheels bundle it (``av``: a
maintained binding that needs no system FFmpeg); never a hand-written
encoder. Rates a
format or a client needs are made by soxr's streaming resampler, which keeps
its state across chunks (no clicks at sentence boundaries).

libsndfile patches a few header fields when a file is closed. A streamed
response has sent those bytes already, so the patches are dropped, and each
format is written so that the unpatched stream still decodes as a file:

* WAV gets a header whose sizes say "to the end" (``audio_io.wav_stream_header``);
* MP3 is constant bitrate, so a decoder's length from the bitrate is right
  (the Xing frame LAME fills in at close stays an empty first frame);
* FLAC's STREAMINFO holds the total sample count, and libsndfile (soundfile)
  refuses a file where it is unknown, so FLAC is sent whole, once complete
  (``Format.streams`` is False);
* Ogg/Opus pages carry their own positions: it streams as it is;
* AAC is sent as ADTS, a header per frame: it streams as it is.

The tests decode every format back with libsndfile and check the duration.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Optional

from voxfit.speaking.audio_io import wav_stream_header

#: OpenAI's raw ``pcm``: 24 kHz, 16-bit little-endian, mono.
PCM_RATE = 24_000
_OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
_MP3_RATES = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)


@dataclass(frozen=True)
class Format:
    name: str
    media_type: str
    container: Optional[tuple[str, str]]  # libsndfile (format, subtype), None for WAV, raw PCM and AAC
    streams: bool = True  # False: sent once complete (its header needs the length)
    muxer: Optional[tuple[str, str]] = None  # PyAV (FFmpeg) (container format, codec), for what libsndfile lacks

    def rate_for(self, rate: int) -> int:
        """The sample rate this format is sent at, for audio made at ``rate``."""
        if self.name == "pcm":
            return PCM_RATE
        if self.name == "opus":  # Opus takes 8/12/16/24/48 kHz only (no 22.05)
            return rate if rate in _OPUS_RATES else (24_000 if rate <= 24_000 else 48_000)
        if self.name == "mp3":
            return rate if rate in _MP3_RATES else (24_000 if rate <= 24_000 else 48_000)
        return rate


FORMATS: dict[str, Format] = {
    "wav": Format("wav", "audio/wav", None),
    "pcm": Format("pcm", "audio/pcm", None),
    "flac": Format("flac", "audio/flac", ("FLAC", "PCM_16"), streams=False),
    "mp3": Format("mp3", "audio/mpeg", ("MP3", "MPEG_LAYER_III")),
    "opus": Format("opus", "audio/opus", ("OGG", "OPUS")),
    "aac": Format("aac", "audio/aac", None, muxer=("adts", "aac")),
}
#: What is asked for now and then but not offered, with the reason a client is told.
NOT_OFFERED: dict[str, str] = {}


def unavailable() -> dict[str, str]:
    """Formats this libsndfile cannot write (MP3 needs libsndfile >= 1.1), with the reason."""
    import soundfile

    missing = {}
    subtypes = {name: soundfile.available_subtypes(name) for name in ("FLAC", "MP3", "OGG")}
    for fmt in FORMATS.values():
        if fmt.container and fmt.container[1] not in subtypes.get(fmt.container[0], {}):
            missing[fmt.name] = (f"{fmt.name} is not offered: the installed libsndfile "
                                 f"{soundfile.__libsndfile_version__} cannot write it")
    import importlib.util

    if importlib.util.find_spec("av") is None:
        missing["aac"] = "aac is not offered: PyAV is not installed (pip install 'voxfit[serve]')"
    return missing


class _Spool(io.RawIOBase):
    """A seekable in-memory file for libsndfile whose new bytes can be taken as they are written."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.sent = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def,override]
        data = bytes(data)
        end = self.pos + len(data)
        if end > len(self.buf):
            self.buf.extend(bytes(end - len(self.buf)))
        self.buf[self.pos:end] = data
        self.pos = end
        return len(data)

    def read(self, size: int = -1) -> bytes:
        end = len(self.buf) if size is None or size < 0 else min(len(self.buf), self.pos + size)
        out = bytes(self.buf[self.pos:end])
        self.pos = end
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: len(self.buf)}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        """Bytes written past what was taken before (rewrites of earlier bytes are dropped)."""
        out = bytes(self.buf[self.sent:])
        self.sent = len(self.buf)
        return out


class _Muxed:
    """A PyAV (FFmpeg) encoder writing into a spool: 16-bit PCM in, the container's bytes out as they come."""

    def __init__(self, muxer: tuple[str, str], rate: int) -> None:
        import av

        self.spool = _Spool()
        self.container = av.open(self.spool, mode="w", format=muxer[0])
        self.stream = self.container.add_stream(muxer[1], rate=rate)
        self.stream.layout = "mono"
        self.stream.bit_rate = 64_000  # AAC-LC at 64 kbit/s: clear speech, OpenAI's AAC is in this range
        self.rate, self.pts = rate, 0

    def encode(self, pcm: bytes) -> bytes:
        import av
        import numpy as np

        if pcm:
            samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts = self.rate, self.pts
            self.pts += samples.shape[1]
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        return self.spool.take()

    def close(self) -> bytes:
        for packet in self.stream.encode(None):  # what the encoder still holds
            self.container.mux(packet)
        self.container.close()
        return self.spool.take()


class Encoder:
    """``feed(pcm) -> bytes`` for each chunk, then ``finish() -> bytes``; ``header()`` first for streams."""

    def __init__(self, fmt: Format, rate: int) -> None:
        self.format = fmt
        self.in_rate = rate
        self.rate = fmt.rate_for(rate)
        self._resampler = None
        if self.rate != rate:
            import soxr

            self._resampler = soxr.ResampleStream(rate, self.rate, 1, dtype="int16", quality="HQ")
        self._file = None
        self._spool: Optional[_Spool] = None
        self._muxed: Optional[_Muxed] = None
        self.samples_out = 0

    @property
    def media_type(self) -> str:
        return self.format.media_type

    def header(self) -> bytes:
        if self.format.name == "wav":
            return wav_stream_header(self.rate)  # sizes unknown: players read to the end
        return b""

    def _resample(self, pcm: bytes, last: bool = False) -> bytes:
        if self._resampler is None:
            return pcm
        import numpy as np

        samples = np.frombuffer(pcm, dtype="<i2")
        return self._resampler.resample_chunk(samples, last=last).astype("<i2").tobytes()

    def _encode(self, pcm: bytes) -> bytes:
        if self.format.muxer is not None:
            if self._muxed is None:
                self._muxed = _Muxed(self.format.muxer, self.rate)
            return self._muxed.encode(pcm)
        if self.format.container is None:
            return pcm
        import numpy as np

        if self._file is None:
            import soundfile

            self._spool = _Spool()
            fmt, subtype = self.format.container
            extra = {"bitrate_mode": "CONSTANT", "compression_level": 0.5} if fmt == "MP3" else {}  # ~80 kbit/s
            self._file = soundfile.SoundFile(self._spool, "w", samplerate=self.rate, channels=1,
                                             format=fmt, subtype=subtype, **extra)
        if pcm:
            self._file.write(np.frombuffer(pcm, dtype="<i2"))
        assert self._spool is not None
        return self._spool.take()

    def feed(self, pcm: bytes) -> bytes:
        out = self._resample(pcm)
        self.samples_out += len(out) // 2
        return self._encode(out)

    def finish(self) -> bytes:
        tail = self._resample(b"", last=True) if self._resampler is not None else b""
        self.samples_out += len(tail) // 2
        data = self._encode(tail) if (tail or self.format.container or self.format.muxer) else b""
        if self._muxed is not None:
            data += self._muxed.close()
        if self._file is not None:
            assert self._spool is not None
            self._file.close()
            data += self._spool.take()
        return data


def encode_whole(fmt: Format, rate: int, pcm: bytes) -> tuple[bytes, int]:
    """A complete file (a WAV with its real sizes) and the rate it is at."""
    encoder = Encoder(fmt, rate)
    if fmt.name == "wav":
        body = encoder.feed(pcm) + encoder.finish()
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(encoder.rate)
            wav.writeframes(body)
        return out.getvalue(), encoder.rate
    body = encoder.feed(pcm) + encoder.finish()
    if encoder._spool is not None:
        body = bytes(encoder._spool.buf)  # with the header fields libsndfile patched at close
    return body, encoder.rate

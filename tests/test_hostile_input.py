"""Hostile input to the real CLI: every bad value is one `error:` line, a non-zero exit, no traceback.

Each case runs the installed `voxfit` in a subprocess, in a scratch directory
holding the hostile files below, as a user (or a script gone wrong) would.
"""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path

import pytest
from helpers import embedded_voice, voxfit_cli

MiB = 2**20
FOUR = ("cpu_onnx", "cuda", "mps", "wsl")


def _voice_beside(root: Path, name: str, config: bytes | None, config_kind: str = "file") -> None:
    """root/name/x.onnx (a link to the embedded voice's graph) with a hostile x.onnx.json beside it."""
    folder = root / name
    folder.mkdir()
    (folder / "x.onnx").symlink_to(embedded_voice())
    target = folder / "x.onnx.json"
    if config_kind == "dir":
        target.mkdir()
    elif config_kind == "dev-zero":
        target.symlink_to("/dev/zero")
    elif config is not None:
        target.write_bytes(config)


def _profile(**changes) -> bytes:
    base = {"os": "linux", "arch": "x86_64", "cpu_model": "Test CPU", "cores_physical": 2, "cores_logical": 4,
            "memory_total_bytes": 8 * 2**30, "memory_available_bytes": 4 * 2**30,
            "devices": [{"id": "cpu", "family": "cpu", "name": "Test CPU"}]}
    base.update(changes)
    return json.dumps(base).encode()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch directory of hostile files; the CLI runs with it as the working directory (no case writes)."""
    root = tmp_path_factory.mktemp("hostile")
    files = {
        "big.json": b" " * (9 * MiB),
        "binary.bin": bytes(range(256)) * 16,
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
        "deep-object.json": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "wrong-types.json": json.dumps({"os": 5, "arch": [], "devices": "many"}).encode(),
        "top-list.json": b"[]",
        "negative-cores.json": _profile(cores_logical=-4, cores_physical=-2),
        "negative-memory.json": _profile(memory_available_bytes=-1),
        "huge-number.json": _profile(memory_total_bytes=1e300),
        "busy-nan.json": _profile(devices=[{"id": "cuda:0", "family": "cuda", "name": "x",
                                            "utilization_percent": float("nan")}]),
        "future.json": _profile(schema_version=99),
        "nul-only.txt": b"\x00",
        "escapes-only.txt": b"\x1b[1;31m\x1b[0m\x07",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "empty-dir").mkdir()
    os.mkfifo(root / "fifo")
    _voice_beside(root, "voice-dev-zero", None, "dev-zero")
    _voice_beside(root, "voice-big", b" " * (9 * MiB))
    _voice_beside(root, "voice-binary", bytes(range(256)))
    _voice_beside(root, "voice-dir", None, "dir")
    _voice_beside(root, "voice-deep", b"[" * 100_000 + b"]" * 100_000)
    _voice_beside(root, "voice-types", json.dumps({"audio": {"sample_rate": "fast"}, "phoneme_id_map": {}}).encode())
    _voice_beside(root, "voice-rate", json.dumps({"audio": {"sample_rate": 0}, "phoneme_id_map": {}}).encode())
    _voice_beside(root, "voice-infinite", b'{"audio": {"sample_rate": 1e999}, "phoneme_id_map": {}}')
    _voice_beside(root, "voice-missing", None)
    return root


def assert_one_error_line(result, expected: str) -> str:
    err, out = result.stderr.decode(errors="replace"), result.stdout.decode(errors="replace")
    assert "Traceback" not in err + out, err
    assert result.returncode != 0, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n") and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    return lines[0]


CASES = [
    # plan --hardware: bounded, typed, plausible
    (["plan", "--hardware", "/dev/zero"], {}, "hardware profile /dev/zero is larger than 8 MiB"),
    (["plan", "--hardware", "big.json"], {}, "hardware profile big.json is larger than 8 MiB"),
    (["plan", "--hardware", "binary.bin"], {}, "hardware profile binary.bin is not valid UTF-8 (byte 0x80"),
    (["plan", "--hardware", "empty-dir"], {}, "hardware profile empty-dir is a directory"),
    (["plan", "--hardware", "deep.json"], {}, "hardware profile deep.json is not JSON voxfit can read: nested too deeply"),
    (["plan", "--hardware", "deep-object.json"], {}, "nested too deeply"),
    (["plan", "--hardware", "wrong-types.json"], {}, "hardware profile wrong-types.json is invalid at os"),
    (["plan", "--hardware", "top-list.json"], {}, "is invalid at top level"),
    (["plan", "--hardware", "negative-cores.json"], {}, "is invalid at cores_physical: -2 is not a number of cores"),
    (["plan", "--hardware", "negative-memory.json"], {}, "memory_available_bytes: -1 is a negative amount of memory"),
    (["plan", "--hardware", "huge-number.json"], {}, "is invalid at memory_total_bytes"),
    (["plan", "--hardware", "busy-nan.json"], {}, "devices.0.utilization_percent: nan is not a percentage"),
    (["plan", "--hardware", "future.json"], {}, "schema_version: 99 is not a profile this voxfit reads"),
    (["plan", "--hardware", "nul-only.txt"], {}, "is not valid JSON (Expecting value at line 1 column 1)"),
    (["plan", "--hardware", "missing.json"], {}, "hardware profile not found: missing.json"),
    # --model: devices, FIFOs, directories, broken Piper configs
    (["plan", "--model", "/dev/zero"], {}, "/dev/zero is not a model voxfit knows"),
    (["plan", "--model", "a\nb"], {}, "model not found: a\\nb"),  # a newline in a value stays on the line
    (["plan", "--model", "fifo"], {}, "fifo is not a model voxfit knows"),
    (["plan", "--model", "empty-dir"], {}, "empty-dir is not a model voxfit knows"),
    (["plan", "--model", "binary.bin"], {}, "binary.bin is not a model voxfit knows"),
    (["plan", "--model", "voice-dev-zero/x.onnx"], {}, "voice config voice-dev-zero/x.onnx.json is larger than 8 MiB"),
    (["plan", "--model", "voice-big/x.onnx"], {}, "voice config voice-big/x.onnx.json is larger than 8 MiB"),
    (["plan", "--model", "voice-binary/x.onnx"], {}, "voice config voice-binary/x.onnx.json is not valid UTF-8"),
    (["plan", "--model", "voice-dir/x.onnx"], {}, "voice config voice-dir/x.onnx.json is a directory"),
    (["plan", "--model", "voice-deep/x.onnx"], {}, "nested too deeply"),
    (["plan", "--model", "voice-types/x.onnx"], {}, "is corrupt or not a Piper config (ValueError"),
    (["plan", "--model", "voice-rate/x.onnx"], {}, "sample_rate 0 is not an audio rate"),
    (["plan", "--model", "voice-infinite/x.onnx"], {}, "is corrupt or not a Piper config (OverflowError"),
    (["plan", "--model", "voice-missing/x.onnx"], {}, "voice config missing: voice-missing/x.onnx.json"),
    (["plan", "--model", "voice-big"], {}, "voice config voice-big/x.onnx.json is larger than 8 MiB"),
    # --device and the settings variables
    (["plan", "--device", "tpu"], {}, "unknown device 'tpu' from --device"),
    (["plan", "--device", ""], {}, "unknown device '' from --device"),
    (["plan", "--device", "cpu\nrm -rf /"], {}, "unknown device 'cpu\\nrm -rf /' from --device"),
    (["detect"], {"VOXFIT_DEVICE": "\x1b[31mgpu"}, "unknown device '\\x1b[31mgpu' from VOXFIT_DEVICE"),
    (["plan"], {"VOXFIT_MEMORY_HEADROOM": "nan"}, "from VOXFIT_MEMORY_HEADROOM"),
    (["plan"], {"VOXFIT_MEMORY_HEADROOM": "-1"}, "from VOXFIT_MEMORY_HEADROOM"),
    (["detect", "--json"], {"VOXFIT_STRICT": "maybe"}, "invalid value 'maybe' from VOXFIT_STRICT"),
    (["-p", "cuda", "plan"], {}, "-p expects no:NAME"),
    (["-p", "no:", "plan"], {}, "-p expects no:NAME"),
    # tune
    (["tune", "--rounds", "0"], {}, "Invalid value for '--rounds'"),
    (["tune", "--rounds", "many"], {}, "Invalid value for '--rounds'"),
    (["tune", "--model", "/dev/zero"], {}, "/dev/zero is not a model voxfit knows"),
    (["tune", "--model", "voice-binary/x.onnx"], {}, "is not valid UTF-8"),
    (["tune", "--device", "gpu"], {}, "unknown device 'gpu' from --device"),
    (["--allow-plugin", "nosuch", "tune"], {}, "no loaded plugin offers a default model"),
    # run: the text and the options in front of the engine
    (["run", "-f", "nul-only.txt"], {}, "input file nul-only.txt has nothing speakable in it"),
    (["run", "-f", "escapes-only.txt"], {}, "input file escapes-only.txt has nothing speakable in it"),
    (["run", "-f", "binary.bin"], {}, "input file binary.bin is not valid UTF-8 (byte 0x80 at offset 128)"),
    (["run", "-f", "empty-dir"], {}, "input file empty-dir is a directory"),
    (["run", "-f", "/dev/zero"], {}, "input file /dev/zero is too long"),
    (["run", "-f", "missing.txt"], {}, "input file missing.txt not found"),
    (["run", ""], {}, "the text is empty"),
    (["run", "Hi.", "--max-chars", "0"], {}, "Invalid value for '--max-chars'"),
    (["run", "Hi.", "--max-chars", "-5"], {}, "Invalid value for '--max-chars'"),
    (["run", "Hi.", "--model", "/dev/zero"], {}, "/dev/zero is not a model voxfit knows"),
    (["run", "Hi.", "--model", "voice-deep/x.onnx"], {}, "nested too deeply"),
    (["run", "Hi.", "--device", "gpu"], {}, "unknown device 'gpu' from --device"),
    (["run", "Hi.", "--hardware", "x.json"], {}, "No such option '--hardware'"),
    (["--allow-plugin", "nosuch", "run", "Hi."], {}, "no loaded plugin offers a default model"),
    (["-p", "no:cpu_onnx", "-p", "no:cuda", "-p", "no:mps", "-p", "no:wsl", "run", "Hi."], {}, "no loaded plugin offers a default model"),
]


@pytest.mark.parametrize("args, env, expected", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_hostile_value_is_one_error_line(hostile: Path, args, env, expected):
    before = sorted(p.name for p in hostile.iterdir())
    result = voxfit_cli(*args, env=env, cwd=hostile, timeout=120)
    assert_one_error_line(result, expected)
    assert sorted(p.name for p in hostile.iterdir()) == before  # no partial output, no stray cache


def test_argument_bytes_the_locale_cannot_decode_are_refused(hostile: Path):
    # "café" typed in a Latin-1 terminal arrives as b"caf\xe9"; a file with that byte is refused too.
    result = voxfit_cli("run", os.fsdecode(b"caf\xe9 au lait."), env={"LC_ALL": "C.UTF-8"}, cwd=hostile)
    assert_one_error_line(result, "the text is not valid UTF-8 (byte 0xe9 at character 3)")


def test_only_control_characters_on_stdin_is_nothing_speakable(hostile: Path):
    result = voxfit_cli("run", "-", input=b"\x00\x1b[0m\x7f", cwd=hostile)
    assert_one_error_line(result, "standard input has nothing speakable in it")
    assert not list(hostile.glob("*.wav"))


# -- .env in the working directory ---------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"VOXFIT_DEVICE=cpu\n\xff\xfe\x00garbage", "is not valid UTF-8 (byte 0xff at offset 18)"),
        (b"# padding\n" * (MiB - 1) + b"#" * 20, "is larger than 8 MiB"),
        (b'VOXFIT_MODEL="unterminated\n', "line 1, cannot be parsed: 'VOXFIT_MODEL=\"unterminated'"),
        (b"VOXFIT_DEVICE=tpu\n", "unknown device 'tpu' from VOXFIT_DEVICE in "),
        (b"VOXFIT_MODEL=/tmp/a\x00b\n", "from VOXFIT_MODEL in "),  # only .env can carry a NUL
    ],
    ids=["binary", "9-MiB", "unparsable", "bad-value", "nul-in-path"],
)
def test_bad_dotenv_is_one_error_line_naming_its_directory(tmp_path: Path, content: bytes, expected: str):
    (tmp_path / ".env").write_bytes(content)
    line = assert_one_error_line(voxfit_cli("plan", cwd=tmp_path), expected)
    assert line.startswith(f"error: .env in {tmp_path}") or f"{tmp_path}/.env" in line, line


@pytest.mark.parametrize("kind", ["directory", "dev-zero-link", "dev-null-link"])
def test_dotenv_that_is_no_regular_file_is_skipped(tmp_path: Path, kind: str):
    # `python -m venv .env` makes a directory of that name; a link to /dev/null says "no .env".
    dotenv = tmp_path / ".env"
    if kind == "directory":
        dotenv.mkdir()
        (dotenv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    else:
        dotenv.symlink_to("/dev/zero" if kind == "dev-zero-link" else "/dev/null")
    result = voxfit_cli("plan", "--json", cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert json.loads(result.stdout)["chosen"]["plugin"] == "cpu_onnx"


# -- the plan says which plugins were left out, and by what ---------------------------------


def _error(result) -> str:
    assert b"Traceback" not in result.stderr + result.stdout
    assert result.returncode == 1 and result.stdout == b"", result.stderr  # no model to plan for
    [line] = result.stderr.decode().splitlines()
    return line


NO_DEFAULT = "error: no loaded plugin offers a default model (and none was named with --model / VOXFIT_MODEL): "


def test_allow_list_naming_no_installed_plugin_is_said_so():
    # The default voice comes from the cpu_onnx plugin: with it left out there is none, and the
    # message says which plugins were left out and by what, not that the voice is wrong.
    error = _error(voxfit_cli("--allow-plugin", "nosuch", "plan", "--json"))
    assert error == NO_DEFAULT + (
        "cpu_onnx, cuda, mps, wsl were left out by the allow-list (--allow-plugin / VOXFIT_ALLOW_PLUGINS: nosuch); "
        "'nosuch' is not an installed plugin (installed: fish, cpu_onnx, cuda, mps, wsl)"
    )
    from_env = _error(voxfit_cli("plan", "--json", env={"VOXFIT_ALLOW_PLUGINS": "nosuch"}))
    assert from_env == error


def test_blocking_every_plugin_is_said_so():
    args = [arg for name in FOUR for arg in ("-p", f"no:{name}")]
    error = _error(voxfit_cli(*args, "plan", "--json"))
    assert error == NO_DEFAULT + "cpu_onnx, cuda, mps, wsl were blocked by -p no:NAME / VOXFIT_BLOCK_PLUGINS"


def test_loaded_plugins_that_cannot_read_the_model_are_named_with_those_left_out():
    # With only cuda (and the core's fish) loaded, nothing reads a Piper voice: say who was left out.
    error = _error(voxfit_cli("--allow-plugin", "cuda", "plan", "--model", str(embedded_voice()), "--json"))
    assert error.startswith(f"error: {embedded_voice()} is not a model voxfit knows: the loaded plugins read Fish")
    assert error.endswith("; cpu_onnx, mps, wsl were left out by the allow-list (--allow-plugin / "
                          "VOXFIT_ALLOW_PLUGINS: cuda)")
    error = _error(voxfit_cli("--allow-plugin", "cuda", "plan", "--json"))
    assert error.startswith(NO_DEFAULT + "cpu_onnx, mps, wsl were left out by the allow-list")


def test_a_misspelt_allow_listed_plugin_is_named_even_when_a_plan_is_chosen():
    result = voxfit_cli("--allow-plugin", "cpu_onnx", "--allow-plugin", "cpuonnx", "plan", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"].endswith(
        "; note: 'cpuonnx' in the allow-list is not an installed plugin"
    )


# -- control characters reach no engine: a real run of the embedded voice -------------------


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as reader:
        assert reader.getframerate() == 22050
        return reader.getnframes() / reader.getframerate()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_text_with_control_characters_is_spoken(tmp_path: Path, source: str):
    clean = "Hello there. Red text is plain now. The next page follows here. Done."
    dirty = ("Hello\x00 there. \x1b[1;31mRed\x1b[0m text is plain\x07 now.\x0cThe next\x7f page "
             "follows\x85 here.\x1b]0;title\x07 Done.")
    (tmp_path / "clean.txt").write_text(clean, encoding="utf-8")
    (tmp_path / "dirty.txt").write_text(dirty, encoding="utf-8")
    reference = voxfit_cli("run", "-f", "clean.txt", "-o", "clean.wav", "--json", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    if source == "file":
        result = voxfit_cli("run", "-f", "dirty.txt", "-o", "dirty.wav", "--json", cwd=tmp_path)
    else:
        result = voxfit_cli("run", "-", "-o", "dirty.wav", "--json", cwd=tmp_path, input=dirty.encode())
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["chunks"] == 4
    # The controls were spaces: the same words, so about the same speech as the clean text.
    seconds, expected = _wav_seconds(tmp_path / "dirty.wav"), _wav_seconds(tmp_path / "clean.wav")
    assert 2.0 < seconds and abs(seconds - expected) < 0.25 * expected, (seconds, expected)


# -- caches: an empty VOXFIT_CACHE_DIR is unset, and tune says when it cannot save ------------


@pytest.mark.slow
def test_empty_cache_dir_writes_nothing_into_the_working_directory(tmp_path: Path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    env = {"VOXFIT_CACHE_DIR": "", "XDG_CACHE_HOME": "", "HOME": str(home)}
    result = voxfit_cli("run", "Caches belong in the home directory.", "-o", "out.wav", cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["out.wav"]
    assert (home / ".cache" / "voxfit").is_dir()  # the default, as if the variables were unset


def _measurements_path(cache: Path) -> Path:
    from voxfit.planning import measurements as tuning
    from voxfit.planning.hardware import detect_host
    from voxfit_cpu_onnx.piper_spec import embedded_default

    path = tuning._path(cache, detect_host(), embedded_default())
    assert path is not None
    return path


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["measurements-path-is-a-directory", "cache-dir-under-a-file"])
def test_tune_prints_its_measurements_and_says_they_were_not_saved(tmp_path: Path, problem: str):
    if problem == "measurements-path-is-a-directory":
        cache = tmp_path / "cache"
        _measurements_path(cache).mkdir(parents=True)
        cause = "exists and is not a regular file)"
    else:
        (tmp_path / "a-file").write_text("not a directory")
        cache = tmp_path / "a-file" / "cache"
        cause = "(Not a directory)"
    result = voxfit_cli("tune", "--rounds", "1", "--json", env={"VOXFIT_CACHE_DIR": str(cache)}, cwd=tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err, err
    last = err.splitlines()[-1]  # above it: one "measured ..." progress line per proposal
    assert last.startswith("error: measured, but not saved: cannot write ") and cause in last, last
    assert f"in the cache directory {cache} (VOXFIT_CACHE_DIR)" in last
    report = json.loads(result.stdout)
    assert report["measurements"] and report["cache"] is None and report["not_saved"] in last
    assert all(entry["rtf"] > 0 for entry in report["measurements"].values())

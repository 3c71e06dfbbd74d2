"""The distributions as a user gets them: built into one folder, installed from it with the package index
reachable, into a fresh environment of the oldest and the newest Python the project supports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import wave
from array import array
from pathlib import Path

import pytest
from serve_helpers import ServerProcess, clean_env

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "core" / "src" / "voxfit" / "server" / "static"
sys.path.insert(0, str(ROOT / "tools"))
from build_dist import build  # noqa: E402

pytestmark = pytest.mark.slow
PYTHONS = ("3.10", "3.13")  # the oldest and the newest supported


@pytest.fixture(scope="module")
def wheel_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    files = [p.name for p in build(folder)]
    names = ("voxfit", "voxfit_cuda", "voxfit_mps", "voxfit_cpu_onnx", "voxfit_wsl")
    assert sorted(files) == sorted([f"{n}-0.2.0-py3-none-any.whl" for n in names] + [f"{n}-0.2.0.tar.gz" for n in names])
    return folder


def _python(version: str) -> str:
    """An interpreter of that Python version: pyenv's (whose python3.X shims work only for the active
    version), else one on PATH; a skip where there is none."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [*pyenv.glob(f"versions/{version}.*/bin/python3"), shutil.which(f"python{version}")]
    for candidate in filter(None, candidates):
        if subprocess.run([str(candidate), "--version"], capture_output=True, timeout=60).returncode == 0:
            return str(candidate)
    pytest.skip(f"Python {version} is not installed here (the project supports 3.10 to 3.13)")


@pytest.mark.parametrize("version", PYTHONS)
def test_a_cpu_user_installs_from_the_wheel_folder_and_speaks_serves_and_lists(version, wheel_folder, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([_python(version), "-m", "venv", str(venv)], check=True, timeout=120)
    report = tmp_path / "report.json"
    # The index stays reachable: a distribution of another project with one of these names would win here.
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--find-links", str(wheel_folder),
         "--report", str(report), "voxfit[cpu-onnx,serve]"], capture_output=True, text=True, timeout=420)
    assert install.returncode == 0, install.stderr[-3000:]
    report = json.loads(report.read_text())
    assert report["environment"]["python_version"] == version  # the venv is of the Python asked for
    installed = {item["metadata"]["name"]: item["download_info"]["url"] for item in report["install"]}
    ours = {name: url for name, url in installed.items() if name.startswith("voxfit")}
    assert {"voxfit", "voxfit-cpu-onnx"} <= set(ours)
    assert all(url.startswith(wheel_folder.as_uri() + "/") for url in ours.values()), ours
    assert "torch" not in installed  # a CPU user's extras need no torch (a bare torch is GBs of CUDA)

    voxfit = venv / "bin" / "voxfit"
    env = clean_env(PYTHONPATH="", VOXFIT_CACHE_DIR=str(tmp_path / "cache"))
    listed = subprocess.run([str(voxfit), "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert {p["name"]: p["status"] for p in json.loads(listed.stdout)}["cpu_onnx"] == "ok"

    out = tmp_path / "hello.wav"
    spoken = subprocess.run([str(voxfit), "run", "Hello there.", "-q", "-o", str(out)], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=300)
    assert spoken.returncode == 0, spoken.stderr
    with wave.open(str(out)) as audio:
        assert audio.getsampwidth() == 2 and audio.getnchannels() == 1
        assert audio.getnframes() > audio.getframerate() // 4  # a short sentence still lasts over 0.25 s
        samples = array("h", audio.readframes(audio.getnframes()))
    assert max(map(abs, samples)) > 1000  # speech, not silence

    server = ServerProcess(["--host", "127.0.0.1", "--port", "0"], env, tmp_path, command=voxfit)
    try:
        with urllib.request.urlopen(server.url + "/", timeout=30) as answer:
            assert answer.status == 200 and answer.headers.get_content_type() == "text/html"
            page = answer.read().decode()
        assets = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', page))
        assert assets == {"/static/page.js", "/static/page.css"}
        for asset in assets:
            with urllib.request.urlopen(server.url + asset, timeout=30) as answer:
                # the very file of the source tree: the wheel shipped it and the installed server serves it
                assert answer.status == 200 and answer.read() == (STATIC / asset.rsplit("/", 1)[1]).read_bytes()
    finally:
        stopped = server.stop()
    assert stopped == 0  # SIGTERM: a clean shutdown


def test_the_readmes_fish_line_installs_exactly_the_pinned_no_deps_packages():
    # The README gives the --no-deps step as one command, for users without this repository; it must name
    # exactly what core/requirements-fish-nodeps.txt (what `make setup` installs) pins.
    pinned = sorted(line.split("#")[0].strip() for line in
                    (ROOT / "core" / "requirements-fish-nodeps.txt").read_text().splitlines()
                    if line.split("#")[0].strip())
    readme = (ROOT / "README.md").read_text()
    line = next(row for row in readme.splitlines() if row.startswith("| Fish Speech"))
    command = line.split("pip install --no-deps ", 1)[1].split("`", 1)[0]
    assert sorted(command.split()) == pinned

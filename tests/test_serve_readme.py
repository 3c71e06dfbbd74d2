"""The serving page's examples, run as written: the start command, the curl line and the OpenAI example
(the README shows the same command and curl line)."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess

import pytest
from helpers import REPO
from serve_helpers import ServerProcess, clean_env, decode

pytestmark = pytest.mark.timeout(180)


def section() -> str:
    text = (REPO / "docs" / "serving.md").read_text()
    return text[:text.index("\n## The page at")]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), flags=re.S)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readme_shows_the_serving_pages_command_and_curl_line():
    readme = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert blocks("sh")[0] in readme
    first_curl = blocks("sh")[1].split("\ncurl")[0]
    assert any(block.startswith(first_curl) for block in readme)


def test_the_readme_serve_command_the_curl_line_and_the_openai_example_work(tmp_path):
    command = blocks("sh")[0].strip()
    assert command == "voxfit serve"
    args = shlex.split(command)[2:]
    # Exactly the README's command; only if port 8000 is taken on this machine does VOXFIT_PORT move it.
    env = clean_env(VOXFIT_CACHE_DIR=str(tmp_path / "cache"))
    if not port_free(8000):
        env["VOXFIT_PORT"] = "0"
    proc = ServerProcess(args, env=env, cwd=tmp_path)
    try:
        base = proc.url
        assert base.startswith("http://127.0.0.1:")
        curl_lines = blocks("sh")[1].replace("\\\n", " ").splitlines()
        first_curl = curl_lines[0].replace("localhost:8000", base.removeprefix("http://"))
        if shutil.which("curl"):
            subprocess.run(first_curl, shell=True, cwd=tmp_path, check=True, timeout=60)
            samples, rate = decode((tmp_path / "hello.wav").read_bytes(), "wav")
            assert rate == 22050 and len(samples) / rate > 0.5
        example = blocks("python")[0].replace("http://127.0.0.1:8000", base)
        exec(compile(example, "README example", "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
    finally:
        assert proc.stop() == 0
    for name, fmt in (("hello.mp3", "mp3"), ("streamed.opus", "opus")):
        samples, rate = decode((tmp_path / name).read_bytes(), fmt)
        assert len(samples) / rate > 0.5, name

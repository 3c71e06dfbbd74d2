"""`voxfit run --model DIR` on a Fish Speech checkpoint, as a user runs it."""

import json
import re
import wave

import pytest
from helpers import embedded_voice, voxfit_cli
from voxfit.engines.fish.tiny import write_reference_wav

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    # The runs of this module share one cache, so the codec decoder is exported to ONNX once.
    return {"VOXFIT_DEVICE": "cpu", "VOXFIT_CACHE_DIR": str(tmp_path_factory.mktemp("fish-cache"))}


def test_run_speaks_a_fish_checkpoint_end_to_end(fish_checkpoint, tmp_path, shared_cache):
    out = tmp_path / "fish.wav"
    result = voxfit_cli("run", "Hello from a tiny fish. A second sentence.", "-o", str(out),
                       "--model", str(fish_checkpoint), "--json", env=shared_cache)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert "fish-torch" in report["chosen"]
    assert report["metrics"]["tokens"] > 0 and report["metrics"]["rtf"] > 0
    with wave.open(str(out)) as w:
        assert w.getframerate() == 44100 and w.getnframes() > 2048
        assert w.getnframes() % 2048 == 0 or report["metrics"]["chunks"] > 1


def test_run_with_a_corrupt_checkpoint_is_one_line_and_writes_nothing(fish_checkpoint, tmp_path):
    import shutil

    broken = shutil.copytree(fish_checkpoint, tmp_path / "broken")
    (broken / "model.pth").write_bytes(b"\x00" * 4096)
    out = tmp_path / "never.wav"
    result = voxfit_cli("run", "Hello.", "-o", str(out), "--model", str(broken))
    err = result.stderr.decode().strip()
    assert result.returncode != 0 and not out.exists()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "model.pth is corrupt" in err


def test_run_clones_a_reference_voice(fish_checkpoint, tmp_path, shared_cache):
    reference = write_reference_wav(tmp_path / "reference.wav", seconds=1.5)
    out = tmp_path / "clone.wav"
    result = voxfit_cli("run", "Now in the reference voice.", "-o", str(out), "--model", str(fish_checkpoint),
                       "--reference-audio", str(reference), "--reference-text", "A steady hum.", "--seed", "7",
                       "--json", env=shared_cache)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["voice"]["reference_text"] == "A steady hum." and report["voice"]["seed"] == 7
    with wave.open(str(out)) as w:
        assert w.getframerate() == 44100 and w.getnframes() > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--reference-audio", "missing.wav"], r"option reference_audio for the fish-torch\S* engine: "
                                               r"reference audio not found: missing\.wav"),
        (["--reference-text", "words"], r"options for the fish-torch\S* engine: reference_text needs reference_audio "
                                        r"\(the clip it transcribes\)"),
    ],
)
def test_reference_mistakes_are_caught_before_loading(tmp_path, fish_checkpoint, args, message):
    result = voxfit_cli("run", "Hello.", "-o", str(tmp_path / "x.wav"), "--model", str(fish_checkpoint), *args,
                       cwd=tmp_path)
    err = result.stderr.decode().strip()
    assert result.returncode != 0 and re.fullmatch(f"error: {message}", err), err
    assert not (tmp_path / "x.wav").exists()


def test_fish_options_do_not_apply_to_a_piper_voice(tmp_path):
    reference = write_reference_wav(tmp_path / "reference.wav", seconds=1.0)
    result = voxfit_cli("run", "Hello.", "-o", str(tmp_path / "x.wav"), "--model", str(embedded_voice()),
                       "--reference-audio", str(reference))
    err = result.stderr.decode().strip()
    assert result.returncode != 0 and not (tmp_path / "x.wav").exists()
    assert err == ("error: option reference_audio does not apply to the piper-onnx engine (it takes: speaker, length_scale, "
                   "noise_scale, noise_w_scale, sentence_silence)")

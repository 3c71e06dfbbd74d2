"""The batch is a planned quantity: sized by memory, shown with its reason, tuned by `voxfit tune --batch`."""

import json
import os

from helpers import voxfit_cli
from voxfit.models import Proposal
from voxfit.planning.batching import apply_tuned_batch, plan_batch
from voxfit.tuning.batch import decide, sizes_up_to

GiB = 2**30


def test_the_batch_is_what_memory_holds_up_to_the_cap():
    roomy = plan_batch(need_bytes=4 * GiB, per_sequence_bytes=GiB, usable_bytes=40 * GiB, cap=8, where="x")
    assert roomy.size == 8 and roomy.peak_bytes == 11 * GiB and "the cap is 8" in roomy.reason
    tight = plan_batch(need_bytes=4 * GiB, per_sequence_bytes=GiB, usable_bytes=6 * GiB + 1, cap=8, where="x")
    assert tight.size == 3 and tight.peak_bytes == 6 * GiB and "holds 3" in tight.reason
    full = plan_batch(need_bytes=4 * GiB, per_sequence_bytes=GiB, usable_bytes=3 * GiB, cap=8, where="x")
    assert full.size == 1  # one sequence is the proposal itself; whether it fits is the plugin's veto


def test_tune_keeps_the_smallest_batch_close_to_the_best():
    assert sizes_up_to(6) == [1, 2, 4, 6] and sizes_up_to(1) == [1]
    flat = decide({1: 1.0, 2: 1.9, 4: 1.95})
    assert flat.chosen == 2 and "97%" in flat.reason
    steep = decide({1: 1.0, 2: 1.5, 4: 2.6})
    assert steep.chosen == 4 and "the most" in steep.reason


def test_a_tuned_batch_lowers_a_plan_and_never_raises_it():
    proposal = Proposal(device="cpu", device_family="cpu", engine="e", batch_size=4)
    apply_tuned_batch(proposal, {"size": 8, "reason": "r"})
    assert proposal.batch_size == 4
    apply_tuned_batch(proposal, {"size": 2, "reason": "measured", "measured_at": "today"})
    assert proposal.batch_size == 2 and proposal.reasons[-1].startswith("batch 2: measured")
    assert "batch 2" in proposal.label()


def test_voxfit_tune_batch_measures_saves_and_the_next_plan_follows(fish_checkpoint, tmp_path):
    env = {"VOXFIT_CACHE_DIR": str(tmp_path / "cache"), "VOXFIT_MAX_BATCH": "2"}
    before = voxfit_cli("plan", "--model", str(fish_checkpoint), "--json", "--no-cache", env=env)
    assert before.returncode == 0, before.stderr.decode()
    planned = json.loads(before.stdout)["chosen"]
    assert planned["batch_size"] == 2 and any(r.startswith("batch 2:") for r in planned["reasons"])
    tuned = voxfit_cli("tune", "--batch", "--rounds", "1", "--model", str(fish_checkpoint), "--json", env=env,
                       timeout=600)
    assert tuned.returncode == 0, tuned.stderr.decode()
    report = json.loads(tuned.stdout)
    assert set(report["throughput"]) == {"1", "2"} and all(v > 0 for v in report["throughput"].values())
    assert report["batch"] in (1, 2) and "voxfit tune --batch" in report["reason"]
    saved = list((tmp_path / "cache" / "measurements").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["batch"]
    after = voxfit_cli("plan", "--model", str(fish_checkpoint), "--json", "--no-cache", env=env)
    chosen = json.loads(after.stdout)["chosen"]
    assert chosen["batch_size"] == report["batch"]
    if report["batch"] == 1:
        assert any("voxfit tune --batch" in r for r in chosen["reasons"])
    assert os.path.isdir(fish_checkpoint)  # the checkpoint directory itself is keyed, not changed

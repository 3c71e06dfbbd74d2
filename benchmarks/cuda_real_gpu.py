"""On a machine with an NVIDIA GPU: detect, plan, load fish models, and measure tokens/s against the roofline.

    python benchmarks/cuda_real_gpu.py [--tiny-checkpoint DIR] [--s1-mini] [--tokens 200] [--json OUT]

Needs voxfit[cuda,fish] installed with a CUDA build of torch. What it does:

1. ``voxfit detect`` through the cuda plugin (NVML) and prints each GPU's
   bandwidth, memory and compute capability.
2. Device lock check on real hardware: a subprocess plans with
   VOXFIT_DEVICE=cpu, applies the plan's environment, imports torch and
   reports ``torch.cuda.device_count()`` (must be 0), against a control
   subprocess without the lock (must be >= 1). The unit test can only show
   the variable is set before torch is imported; this shows CUDA obeys it.
3. With ``--tiny-checkpoint DIR`` (a tiny fish checkpoint, e.g. from the
   fish engine's test builder): plans for it, loads it through voxfit's own
   runtime (cuda plugin -> fish-torch adapter), synthesizes a sentence and
   prints the run's metrics, including GPU utilisation sampled during it.
4. With ``--s1-mini``: builds a randomly initialised S1-mini-shaped
   DualARTransformer with fish_speech's classes (no download: random
   weights, same shape and bytes per token as the real model), places it
   as the plan says (precision; compile if the plan compiles), decodes
   ``--tokens`` tokens with fish_speech's own ``decode_one_token_ar``, and
   reports tokens/s, achieved bandwidth and the share of the roofline, next
   to the plan's own estimate (the engine's decode calibration x roofline);
   then, through voxfit's batched decoder (``voxfit.engines.fish.batched``),
   tokens/s summed over a batch at each of ``--batches`` (1,2,4,8 by
   default) and the ratio to batch 1: what continuous batching buys on
   this GPU.
5. The tiny run (3.) also reports the time to its first audio window against
   the whole sentence: audio before the sentence ends.

Numbers from a run belong in the closing note of the work that used them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from voxfit.engines.fish.tiny import s1_mini_llm_config

# The shape published for openaudio-s1-mini (no gradient checkpointing: this is inference).
S1_MINI = {**s1_mini_llm_config(), "use_gradient_checkpointing": False}
BATCHES = [1, 2, 4, 8]

LOCK_CHECK = r"""
import json, os, sys
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.speaking.load import apply_env
from voxfit.settings import load_settings
settings = load_settings()
plan = make_plan(PluginHost.from_entry_points(settings))
apply_env(plan.env_changes)
import torch
print("LOCK=" + json.dumps({"cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "count": torch.cuda.device_count(),
                            "chosen": plan.chosen.device if plan.chosen else None}))
"""


def detect_and_show():
    from voxfit.planning.planner import detect
    from voxfit.plugins import PluginHost
    from voxfit.settings import load_settings

    host = PluginHost.from_entry_points(load_settings())
    profile = detect(host)
    gpus = [d for d in profile.devices if d.family == "cuda"]
    for d in gpus:
        c = d.capabilities
        print(f"{d.id}: {d.name}, cc {c.get('compute_capability')}, {c.get('bandwidth_gbps')} GB/s "
              f"({c.get('memory_bus_width_bits')} bit x {c.get('memory_clock_mhz')} MHz), "
              f"{(d.memory_free_bytes or 0) / 2**30:.1f}/{(d.memory_total_bytes or 0) / 2**30:.1f} GiB free, "
              f"{d.utilization_percent}% busy, flags {d.flags}")
    for note in profile.notes:
        print("note:", note)
    return host, profile, gpus


def device_lock_check() -> dict:
    results = {}
    for label, extra in (("locked", {"VOXFIT_DEVICE": "cpu"}), ("control", {"VOXFIT_BLOCK_PLUGINS": "cuda"})):
        env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "VOXFIT_DEVICE")}
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", LOCK_CHECK], capture_output=True, text=True, env=env, timeout=600)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOCK=")]
        results[label] = json.loads(line[0][5:]) if line else {"error": out.stderr[-500:]}
    ok = results["locked"].get("count") == 0 and (results["control"].get("count") or 0) >= 1
    print(f"device lock: locked -> {results['locked']}; control -> {results['control']}; "
          f"{'PROVEN' if ok else 'NOT PROVEN'}")
    results["proven"] = ok
    return results


def run_tiny(checkpoint: Path) -> dict:
    from voxfit.planning.planner import make_plan
    from voxfit.plugins import PluginHost
    from voxfit.settings import load_settings
    from voxfit.speaking import load as runtime

    host = PluginHost.from_entry_points(load_settings(model=str(checkpoint)))
    plan = make_plan(host)
    print("tiny plan:", plan.summary)
    loaded = runtime.load(host, plan)
    start = time.perf_counter()
    first = None
    chunks = []
    for chunk in loaded.engine.synthesize("Hello from the tiny fish checkpoint on a real GPU."):
        first = first if first is not None else time.perf_counter() - start
        chunks.append(chunk)
    wall = time.perf_counter() - start
    seconds = sum(c.seconds for c in chunks)
    tokens = sum(c.tokens or 0 for c in chunks)
    metrics = loaded.engine.metrics() if hasattr(loaded.engine, "metrics") else {}
    loaded.engine.close()
    result = {"plan": plan.chosen.label() if plan.chosen else None, "wall_s": wall, "audio_s": seconds,
              "rtf": wall / seconds if seconds else None, "tokens": tokens, "windows": len(chunks),
              "first_audio_s": first, "first_audio_share": first / wall if first and wall else None, **metrics}
    print("tiny run:", result)
    return result


# ---------------------------------------------------------------------------------------------------------
# BUILDING A RANDOM S1-MINI-SHAPED MODEL WITH fish_speech's OWN CLASSES
# Written against fish-speech 0.1.0 (DualARTransformer.from_pretrained(path, load_weights=False) returns
# random weights; setup_caches; inference.decode_one_token_ar). Not run on a GPU by its author: check
# this function first if a newer fish-speech changed those signatures.
# ---------------------------------------------------------------------------------------------------------
def build_random_s1_mini(directory: Path):
    from fish_speech.models.text2semantic.llama import DualARTransformer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(S1_MINI))
    # 256 single-byte tokens; special tokens come from fish_speech's defaults (no special_tokens.json).
    ranks = "".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256))
    (directory / "tokenizer.tiktoken").write_text(ranks)
    return DualARTransformer.from_pretrained(str(directory), load_weights=False)


def run_s1_mini(plan_proposal, bandwidth_gbps: float, tokens: int) -> dict:
    import torch
    from fish_speech.models.text2semantic.inference import decode_one_token_ar
    from voxfit.engines.fish.spec import parameters_read_per_token

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[plan_proposal.precision]
    with tempfile.TemporaryDirectory() as tmp:
        model = build_random_s1_mini(Path(tmp))
    model = model.to(device="cuda:0", dtype=dtype).eval()  # cuda:0: the plan's env narrowed visibility
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.device("cuda:0"):
        model.setup_caches(max_batch_size=1, max_seq_len=model.config.max_seq_len, dtype=dtype)
    step = decode_one_token_ar
    if plan_proposal.compile:
        step = torch.compile(decode_one_token_ar, mode="reduce-overhead", fullgraph=True)
    n_cb = model.config.num_codebooks
    cur = torch.zeros((1, n_cb + 1, 1), dtype=torch.int, device="cuda:0")
    args = dict(temperature=torch.tensor(0.7, device="cuda:0"), top_p=torch.tensor(0.7, device="cuda:0"),
                repetition_penalty=torch.tensor(1.2, device="cuda:0"), audio_masks=None, audio_parts=None,
                previous_tokens=None)

    def decode(n: int, start: int) -> None:
        for i in range(n):
            pos = torch.tensor([start + i], device="cuda:0", dtype=torch.long)
            nxt = step(model=model, x=cur, input_pos=pos, **args).clone()
            cur.copy_(nxt.view(1, n_cb + 1, -1))

    with torch.inference_mode():
        t0 = time.perf_counter()
        decode(5, 0)  # warm-up (and compilation, when compiled)
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        decode(tokens, 5)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    bytes_per_token = parameters_read_per_token(S1_MINI) * torch.finfo(dtype).bits // 8
    tps = tokens / wall
    roofline = bandwidth_gbps * 1e9 / bytes_per_token
    estimate = plan_proposal.estimate.tokens_per_s  # the plan's own estimate, from the engine's calibration
    result = {"precision": plan_proposal.precision, "batch_size": plan_proposal.batch_size, "compile": plan_proposal.compile, "warmup_s": warm,
              "tokens_per_s": tps, "achieved_gbps": tps * bytes_per_token / 1e9, "roofline_tokens_per_s": roofline,
              "share_of_roofline": tps / roofline, "plugin_estimate_tokens_per_s": estimate,
              "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30}
    print("S1-mini-shaped random model:", json.dumps(result, indent=2))
    result["batched"] = run_batched(model, dtype, BATCHES, min(tokens, 100))
    return result


def run_batched(model, dtype, batches: list[int], tokens: int) -> dict:
    """Tokens/s summed over a batch through voxfit's batched decoder, and the ratio to batch 1."""
    import torch
    from voxfit.engines.fish.batched import BatchedDecoder, Sampling, Sequence

    out: dict = {}
    n_cb = model.config.num_codebooks
    prompt = torch.zeros((n_cb + 1, 16), dtype=torch.int, device="cuda:0")
    prompt[0] = 300  # a text token: the codebooks are not read for it
    for batch in batches:
        decoder = BatchedDecoder(model, batch, dtype, "cuda:0")
        seqs = []
        with torch.inference_mode():
            for slot in range(batch):
                seq = Sequence(slot=slot, prompt_len=16, budget=tokens + 8,
                               sampling=Sampling(0.8, 0.8, 1.1, torch.Generator(device="cuda:0").manual_seed(slot)))
                decoder.prefill(seq, prompt)
                seqs.append(seq)
            for _ in range(3):
                decoder.step(seqs)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(tokens):
                decoder.step(seqs)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        out[batch] = {"tokens_per_s": batch * tokens / wall,
                      "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30}
        del decoder, seqs
        torch.cuda.empty_cache()
    base = out[batches[0]]["tokens_per_s"]
    for batch in batches:
        out[batch]["ratio_to_first"] = out[batch]["tokens_per_s"] / base
    print("batched decoding:", json.dumps(out, indent=2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-checkpoint", type=Path, default=None)
    parser.add_argument("--s1-mini", action="store_true", help="decode with a random S1-mini-shaped model")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--batches", default="1,2,4,8", help="batch sizes for the batched decoder (S1-mini)")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    args = parser.parse_args()
    BATCHES[:] = [int(b) for b in args.batches.split(",") if b.strip()]

    _, profile, gpus = detect_and_show()
    if not gpus:
        print("no NVIDIA GPU detected through NVML: nothing to measure")
        return 2
    report: dict = {"gpus": [d.model_dump(mode="json") for d in gpus], "device_lock": device_lock_check()}
    if args.tiny_checkpoint:
        try:
            report["tiny"] = run_tiny(args.tiny_checkpoint)
        except Exception as exc:  # report and go on: the S1-mini measurement does not depend on it
            report["tiny"] = {"error": f"{type(exc).__name__}: {exc}"}
            print("tiny run failed:", report["tiny"]["error"])
    if args.s1_mini:
        from voxfit.engines.fish.spec import memory_estimates, parameters_read_per_token
        from voxfit.models import ModelSpec
        from voxfit.planning.planner import make_plan
        from voxfit.plugins import PluginHost
        from voxfit.settings import load_settings
        from voxfit.speaking.load import apply_env

        spec = ModelSpec(family="fish", name="s1-mini-random", memory=memory_estimates(S1_MINI, 0),
                         properties={"parameters_read_per_token": parameters_read_per_token(S1_MINI)})
        host = PluginHost.from_entry_points(load_settings())
        plan = make_plan(host, hardware=profile, model=spec)
        print("S1-mini plan:", plan.summary)
        cuda = next((p for p in plan.ranked() if p.device_family == "cuda"), None)
        if cuda is None:
            print("no feasible CUDA proposal for S1-mini here:", [r.reasons for r in plan.rejected])
        else:
            if plan.chosen is cuda:
                apply_env(plan.env_changes)  # before torch is imported: narrow to the planned GPU
            bandwidth = float(profile.device(cuda.device).capabilities.get("bandwidth_gbps") or 0)
            report["s1_mini"] = run_s1_mini(cuda, bandwidth, args.tokens)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

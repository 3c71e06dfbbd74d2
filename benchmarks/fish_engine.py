"""Fish Speech on the tiny checkpoint, every comparison measured in the same run.

1. voxfit's engine vs fish-speech's own loop (init_model + generate_long + codec.decode):
   same checkpoint, text, seed and token budget, interleaved rounds; overhead ratio.
2. Gradient checkpointing flag on vs off (everything else clean).
3. Codec decode: torch with weight norm, torch with weight norm folded, ONNX Runtime.
4. int8 weight-only vs fp32 generation on the CPU.

Usage: python benchmarks/fish_engine.py [--rounds N] [--json FILE]
Ratios only: absolute times on a 2-core shared box move by 2x between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

TEXT = "The quick brown fox jumps over the lazy dog."
TOKENS = 48


def median_time(fn, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch
    from voxfit.engines.fish import engine as fish_torch
    from voxfit.engines.fish.codec import load_codec
    from voxfit.engines.fish.onnx_codec import probe_codes
    from voxfit.engines.fish.spec import read as read_fish_spec
    from voxfit.engines.fish.tiny import build_tiny_checkpoint

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="voxfit-fish-bench-"))
    ckpt = build_tiny_checkpoint(work / "tiny-s1")
    spec = read_fish_spec(ckpt)
    inference = fish_torch.import_fish_stack()["inference"]
    results: dict = {"rounds": args.rounds, "tokens_budget": TOKENS, "threads": 1, "torch": torch.__version__}

    def engine(**kw):
        e = fish_torch.load_fish_engine(spec, device="cpu", precision="fp32", quantization=kw.pop("q", "none"),
                                        compile=False, threads=1, max_new_tokens=TOKENS, seed=0,
                                        cache_dir=work / "cache", **kw)
        fish_torch.disable_training_artifacts(e)
        e.prepare()
        return e

    # -- 1. voxfit vs fish-speech's own loop ------------------------------------
    ours = engine()
    model, decode_one_token = inference.init_model(str(ckpt), "cpu", torch.float32, compile=False)
    codec = load_codec(ckpt, "cpu", torch.float32).eval()  # as fish-speech uses it: eval, weight norm kept

    def fish_own():
        torch.manual_seed(0)
        codes = []
        for r in inference.generate_long(model=model, device="cpu", decode_one_token=decode_one_token, text=TEXT,
                                         max_new_tokens=TOKENS, prompt_tokens=[], top_p=0.8,
                                         repetition_penalty=1.1, temperature=0.8):
            if r.action == "sample":
                codes.append(r.codes)
            elif r.action == "next":
                break
        c = torch.cat(codes, dim=1)
        with torch.inference_mode():
            audio, _ = codec.decode(c[None].long(), torch.tensor([c.shape[1]]))
        return c.shape[1]

    def voxfit_engine():
        return next(ours.synthesize(TEXT)).tokens

    fish_tokens, our_tokens = fish_own(), voxfit_engine()  # warm-up, and the same work on both sides
    fish_times, our_times = [], []
    for _ in range(args.rounds):  # interleaved so load on the box hits both alike
        fish_times.append(median_time(fish_own, 1))
        our_times.append(median_time(voxfit_engine, 1))
    results["overhead"] = {
        "tokens": {"fish_speech": fish_tokens, "voxfit": our_tokens},
        "fish_speech_s": statistics.median(fish_times),
        "voxfit_s": statistics.median(our_times),
        "ratio": statistics.median(our_times) / statistics.median(fish_times),
    }

    # -- 2. gradient checkpointing flag on vs off -------------------------------
    configs = {id(c): c for m in ours.llm.modules() if (c := getattr(m, "config", None)) is not None}

    def generate_only():
        torch.manual_seed(0)
        return ours.generate_codes(TEXT).shape[1]

    def set_flag(value):
        for c in configs.values():
            c.use_gradient_checkpointing = value

    on, off = [], []
    generate_only()
    for _ in range(args.rounds):
        set_flag(True)
        on.append(median_time(generate_only, 1))
        set_flag(False)
        off.append(median_time(generate_only, 1))
    results["gradient_checkpointing"] = {
        "on_s": statistics.median(on), "off_s": statistics.median(off),
        "ratio_on_over_off": statistics.median(on) / statistics.median(off),
    }

    # -- 3. codec decode: torch (weight norm), torch (folded), ONNX Runtime --------
    onnx_engine = engine(codec_backend="onnx")
    assert onnx_engine.onnx_codec is not None, onnx_engine.notes
    wn_codec = load_codec(ckpt, "cpu", torch.float32).eval().requires_grad_(False)
    decode_rows = []
    for frames in (22, 64, 200):
        codes = probe_codes(onnx_engine.codec, frames, seed=0)

        def torch_wn(codes=codes, frames=frames):
            with torch.inference_mode():
                wn_codec.decode(codes[None], torch.tensor([frames]))

        def torch_folded(codes=codes, frames=frames):
            with torch.inference_mode():
                onnx_engine.codec.decode(codes[None], torch.tensor([frames]))

        def ort(codes=codes):
            onnx_engine.onnx_codec.decode(codes)

        for fn in (torch_wn, torch_folded, ort):
            fn()
        t_wn, t_folded, t_ort = [], [], []
        for _ in range(args.rounds):
            t_wn.append(median_time(torch_wn, 1))
            t_folded.append(median_time(torch_folded, 1))
            t_ort.append(median_time(ort, 1))
        row = {"frames": frames, "audio_s": frames * 2048 / 44100,
               "torch_weight_norm_ms": 1e3 * statistics.median(t_wn),
               "torch_folded_ms": 1e3 * statistics.median(t_folded),
               "onnxruntime_ms": 1e3 * statistics.median(t_ort)}
        row["torch_folded_over_onnx"] = row["torch_folded_ms"] / row["onnxruntime_ms"]
        row["weight_norm_over_folded"] = row["torch_weight_norm_ms"] / row["torch_folded_ms"]
        decode_rows.append(row)
    results["codec_decode"] = decode_rows
    results["onnx_notes"] = onnx_engine.notes

    # end to end, both CPU proposals, same run
    def synth(e):
        return lambda: next(e.synthesize(TEXT))

    t_torch, t_onnx = [], []
    for _ in range(args.rounds):
        t_torch.append(median_time(synth(ours), 1))
        t_onnx.append(median_time(synth(onnx_engine), 1))
    results["end_to_end"] = {"fish_torch_s": statistics.median(t_torch),
                             "fish_torch_onnx_codec_s": statistics.median(t_onnx),
                             "torch_over_onnx_codec": statistics.median(t_torch) / statistics.median(t_onnx)}

    # -- 4. int8 weight-only vs fp32 on the CPU --------------------------------------
    int8 = engine(q="int8-weight-only")

    def gen(e):
        def run():
            torch.manual_seed(0)
            e.generate_codes(TEXT)
        return run

    t_fp32, t_int8 = [], []
    for _ in range(args.rounds):
        t_fp32.append(median_time(gen(ours), 1))
        t_int8.append(median_time(gen(int8), 1))
    results["int8_cpu"] = {"fp32_s": statistics.median(t_fp32), "int8_s": statistics.median(t_int8),
                           "ratio_int8_over_fp32": statistics.median(t_int8) / statistics.median(t_fp32)}

    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    o = r["overhead"]
    print(f"tiny checkpoint, 1 thread, median of {r['rounds']} interleaved rounds, torch {r['torch']}\n")
    print("| comparison | A | B | A / B |\n|---|---|---|---|")
    print(f"| voxfit engine vs fish-speech's own loop ({o['tokens']['voxfit']} vs {o['tokens']['fish_speech']} tokens)"
          f" | {o['voxfit_s'] * 1e3:.0f} ms | {o['fish_speech_s'] * 1e3:.0f} ms | {o['ratio']:.2f} |")
    g = r["gradient_checkpointing"]
    print(f"| gradient checkpointing flag on vs off (generation) | {g['on_s'] * 1e3:.0f} ms | {g['off_s'] * 1e3:.0f} ms"
          f" | {g['ratio_on_over_off']:.2f} |")
    e = r["end_to_end"]
    print(f"| fish-torch vs fish-torch+onnx-codec (end to end) | {e['fish_torch_s'] * 1e3:.0f} ms"
          f" | {e['fish_torch_onnx_codec_s'] * 1e3:.0f} ms | {e['torch_over_onnx_codec']:.2f} |")
    i = r["int8_cpu"]
    print(f"| int8 weight-only vs fp32 (generation, CPU) | {i['int8_s'] * 1e3:.0f} ms | {i['fp32_s'] * 1e3:.0f} ms"
          f" | {i['ratio_int8_over_fp32']:.2f} |")
    print("\n| frames (audio s) | torch + weight norm | torch folded | ONNX Runtime | folded / ORT | WN / folded |")
    print("|---|---|---|---|---|---|")
    for row in r["codec_decode"]:
        print(f"| {row['frames']} ({row['audio_s']:.1f} s) | {row['torch_weight_norm_ms']:.1f} ms"
              f" | {row['torch_folded_ms']:.1f} ms | {row['onnxruntime_ms']:.1f} ms"
              f" | {row['torch_folded_over_onnx']:.2f} | {row['weight_norm_over_folded']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())

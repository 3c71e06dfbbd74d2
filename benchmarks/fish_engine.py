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


class Bench:
    """The tiny checkpoint, loaded as each comparison needs it; every comparison interleaves its two sides."""

    def __init__(self, rounds: int) -> None:
        import torch
        from voxfit.engines.fish import engine as fish_torch
        from voxfit.engines.fish.spec import read as read_fish_spec
        from voxfit.engines.fish.tiny import build_tiny_checkpoint

        torch.set_num_threads(1)
        self.torch, self.fish_torch, self.rounds = torch, fish_torch, rounds
        self.work = Path(tempfile.mkdtemp(prefix="voxfit-fish-bench-"))
        self.ckpt = build_tiny_checkpoint(self.work / "tiny-s1")
        self.spec = read_fish_spec(self.ckpt)
        self.ours = self.engine()

    def engine(self, **kw):
        e = self.fish_torch.load_fish_engine(
            self.spec, device="cpu", precision="fp32", quantization=kw.pop("q", "none"), compile=False, threads=1,
            max_new_tokens=TOKENS, seed=0, cache_dir=self.work / "cache", **kw)
        self.fish_torch.disable_training_artifacts(e)
        e.prepare()
        return e

    def interleaved(self, a, b) -> tuple[float, float]:
        """Median seconds of ``a`` and of ``b``, alternated so that load on the box hits both alike."""
        ta, tb = [], []
        for _ in range(self.rounds):
            ta.append(median_time(a, 1))
            tb.append(median_time(b, 1))
        return statistics.median(ta), statistics.median(tb)

    def overhead(self) -> dict:
        """voxfit's engine against fish-speech's own loop: same checkpoint, text, seed and token budget."""
        from voxfit.engines.fish.codec import load_codec

        torch, inference = self.torch, self.fish_torch.import_fish_stack()["inference"]
        model, decode_one_token = inference.init_model(str(self.ckpt), "cpu", torch.float32, compile=False)
        codec = load_codec(self.ckpt, "cpu", torch.float32).eval()  # as fish-speech uses it: weight norm kept

        def fish_own():
            torch.manual_seed(0)
            codes = [r.codes for r in _until_next(inference.generate_long(
                model=model, device="cpu", decode_one_token=decode_one_token, text=TEXT, max_new_tokens=TOKENS,
                prompt_tokens=[], top_p=0.8, repetition_penalty=1.1, temperature=0.8))]
            c = torch.cat(codes, dim=1)
            with torch.inference_mode():
                codec.decode(c[None].long(), torch.tensor([c.shape[1]]))
            return c.shape[1]

        def voxfit_engine():
            return next(self.ours.synthesize(TEXT)).tokens

        tokens = {"fish_speech": fish_own(), "voxfit": voxfit_engine()}  # warm-up: the same work on both sides
        fish_s, ours_s = self.interleaved(fish_own, voxfit_engine)
        return {"tokens": tokens, "fish_speech_s": fish_s, "voxfit_s": ours_s, "ratio": ours_s / fish_s}

    def gradient_checkpointing(self) -> dict:
        configs = {id(c): c for m in self.ours.llm.modules() if (c := getattr(m, "config", None)) is not None}

        def with_flag(value):
            def run():
                for c in configs.values():
                    c.use_gradient_checkpointing = value
                self.torch.manual_seed(0)
                return self.ours.generate_codes(TEXT).shape[1]
            return run

        with_flag(False)()
        on, off = self.interleaved(with_flag(True), with_flag(False))
        return {"on_s": on, "off_s": off, "ratio_on_over_off": on / off}

    def codec_decode(self) -> tuple[list[dict], object]:
        """Decode time of torch (weight norm), torch (folded) and ONNX Runtime, at three lengths."""
        from voxfit.engines.fish.codec import load_codec
        from voxfit.engines.fish.onnx_codec import probe_codes

        torch = self.torch
        onnx_engine = self.engine(codec_backend="onnx")
        assert onnx_engine.onnx_codec is not None, onnx_engine.notes
        wn_codec = load_codec(self.ckpt, "cpu", torch.float32).eval().requires_grad_(False)
        rows = []
        for frames in (22, 64, 200):
            codes = probe_codes(onnx_engine.codec, frames, seed=0)
            lengths = torch.tensor([frames])
            sides = {"torch_weight_norm_ms": lambda c=codes, n=lengths: wn_codec.decode(c[None], n),
                     "torch_folded_ms": lambda c=codes, n=lengths: onnx_engine.codec.decode(c[None], n),
                     "onnxruntime_ms": lambda c=codes: onnx_engine.onnx_codec.decode(c)}
            row = {"frames": frames, "audio_s": frames * 2048 / 44100}
            for name, fn in sides.items():
                with torch.inference_mode():
                    fn()
                    row[name] = 1e3 * median_time(fn, self.rounds)
            row["torch_folded_over_onnx"] = row["torch_folded_ms"] / row["onnxruntime_ms"]
            row["weight_norm_over_folded"] = row["torch_weight_norm_ms"] / row["torch_folded_ms"]
            rows.append(row)
        return rows, onnx_engine

    def end_to_end(self, onnx_engine) -> dict:
        t_torch, t_onnx = self.interleaved(lambda: next(self.ours.synthesize(TEXT)),
                                           lambda: next(onnx_engine.synthesize(TEXT)))
        return {"fish_torch_s": t_torch, "fish_torch_onnx_codec_s": t_onnx, "torch_over_onnx_codec": t_torch / t_onnx}

    def int8(self) -> dict:
        int8 = self.engine(q="int8-weight-only")

        def gen(e):
            def run():
                self.torch.manual_seed(0)
                e.generate_codes(TEXT)
            return run

        fp32_s, int8_s = self.interleaved(gen(self.ours), gen(int8))
        return {"fp32_s": fp32_s, "int8_s": int8_s, "ratio_int8_over_fp32": int8_s / fp32_s}


def _until_next(responses):
    for r in responses:
        if r.action == "sample":
            yield r
        elif r.action == "next":
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bench = Bench(args.rounds)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "tokens_budget": TOKENS,
                     "threads": 1, "torch": bench.torch.__version__}
    results["overhead"] = bench.overhead()
    results["gradient_checkpointing"] = bench.gradient_checkpointing()
    results["codec_decode"], onnx_engine = bench.codec_decode()
    results["onnx_notes"] = onnx_engine.notes
    results["end_to_end"] = bench.end_to_end(onnx_engine)
    results["int8_cpu"] = bench.int8()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    o = r["overhead"]
    print(f"{r['date']}: tiny checkpoint, 1 thread, median of {r['rounds']} interleaved rounds, torch {r['torch']}\n")
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

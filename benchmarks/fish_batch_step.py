"""What a decode step for 4 sequences costs next to a step for 1, on the tiny checkpoint, with the noise drawn
ahead by a thread of its own and drawn by the step itself.

The tiny checkpoint (random weights, the published layout, built here with
fish-speech's own classes) is the model the serving benchmark runs: its step
is mostly the interpreter's and the sampler's work, not the weights', so the
ratio of a batch-4 step to a batch-1 step is what bounds its 4-client gain.
Each sequence's exponential noise is drawn ahead a chunk of tokens at a time
(``NoiseSupply``); in the server a noise thread draws the next chunk while the
step uses the current one (``ahead``). Without that thread the step draws
each chunk itself (``in the step``): the baseline, measured in the same run.
Batch sizes and both ways take turns, ``--rounds`` times, and the medians are
reported (this machine's speed drifts by a third over minutes).

    python benchmarks/fish_batch_step.py [--rounds 7] [--steps 150]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

TEXT = "The quick brown fox jumps over the lazy dog near the riverbank today."
WAYS = ("in the step", "ahead")


class NoiseThread:
    """What the server's noise thread does for the sequences of one measurement."""

    def __init__(self) -> None:
        self.wanted, self.sequences = threading.Event(), []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            self.wanted.wait()
            self.wanted.clear()
            for seq in list(self.sequences):
                seq.sampling.noise.fill()


def step_ms(model, torch, batch: int, ahead: bool, steps: int, noise: NoiseThread) -> float:
    from voxfit.engines.fish.batched import BatchedDecoder, NoiseSupply, Sampling, Sequence, encode_prompt

    decoder = BatchedDecoder(model, batch, torch.float32, "cpu")
    prompt, masks, parts = encode_prompt(model, TEXT, None, None)
    seqs = []
    with torch.inference_mode():
        for slot in range(batch):
            sampling = Sampling(0.8, 0.8, 1.1, torch.Generator().manual_seed(slot))
            sampling.noise = NoiseSupply(sampling.generator, decoder.noise_sizes,
                                         wanted=noise.wanted.set if ahead else None)
            sampling.noise.fill()
            seq = Sequence(slot=slot, prompt_len=prompt.shape[1], budget=10**6, sampling=sampling)
            decoder.prefill(seq, prompt, masks, parts)
            seqs.append(seq)
        noise.sequences = seqs if ahead else []
        for _ in range(5):
            decoder.step(seqs)
        start = time.perf_counter()
        for _ in range(steps):
            decoder.step(seqs)
        return (time.perf_counter() - start) / steps * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    import torch
    from voxfit.engines.fish.engine import disable_training_artifacts, load_fish_engine
    from voxfit.engines.fish.tiny import build_tiny_checkpoint
    from voxfit.plugins import PluginHost
    from voxfit.settings import Settings

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="voxfit-bench-") as tmp:
        # through the real loader, as `voxfit serve --model DIR` loads it
        model = PluginHost.from_entry_points(Settings()).resolve_model(str(build_tiny_checkpoint(Path(tmp) / "tiny-s1")))
        engine = load_fish_engine(model, device="cpu", precision="fp32", quantization="none", compile=False, threads=1)
        disable_training_artifacts(engine)
    noise = NoiseThread()
    times: dict[tuple[int, str], list[float]] = {(b, w): [] for b in (1, 4) for w in WAYS}
    for _ in range(args.rounds):
        for batch in (1, 4):
            for way in WAYS:
                times[(batch, way)].append(step_ms(engine.llm, torch, batch, way == "ahead", args.steps, noise))
    date = time.strftime("%Y-%m-%d")
    for way in WAYS:
        one, four = (statistics.median(times[(b, way)]) for b in (1, 4))
        print(f"{date} noise {way}: batch 1 step {one:.2f} ms, batch 4 step {four:.2f} ms ({four / one:.2f}x; "
              f"{4 * one / four:.2f}x the tokens per second of batch 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

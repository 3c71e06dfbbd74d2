"""What batching buys where decoding is memory-bound: an S1-mini-shaped model on the CPU at batch 1, 2 and 4.

The model is fish-speech's ``DualARTransformer`` with the shape published for
openaudio-s1-mini (28 + 4 layers, dim 1024, 10 codebooks) and random weights,
in fp32, built in memory (nothing is downloaded or saved). voxfit's batched
decoder runs ``--tokens`` decode steps for ``b`` sequences at once, after
each sequence's prompt; reported are tokens/s summed over the batch and the
ratio to batch 1 measured in the same run. Each step reads every weight once
whatever the batch, as on a GPU, so the ratio says what a batch buys there
too (a GPU adds far more bandwidth, not a different shape of the curve).

    python benchmarks/fish_batch_s1_mini.py [--tokens 6] [--threads 1]

Needs about 3 GB for the weights and 1.9 GB of KV cache per sequence (fp32 at the
model's 8,192 positions): ~11 GB in all.
"""

from __future__ import annotations

import argparse
import sys
import time

BATCHES = (1, 2, 4)
TEXT = "Hello there, this is a test of batched decoding on the CPU."


def build_model() -> tuple:
    import tempfile
    from pathlib import Path

    import torch
    from voxfit.engines.fish.engine import import_fish_stack
    from voxfit.engines.fish.tiny import _build_tokenizer, s1_mini_llm_config

    import_fish_stack()
    from fish_speech.models.text2semantic.llama import DualARModelArgs, DualARTransformer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        tokenizer = _build_tokenizer(Path(work))
    model = DualARTransformer(DualARModelArgs(**s1_mini_llm_config()), tokenizer=tokenizer).eval()
    model.requires_grad_(False)
    for config in {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values():
        config.use_gradient_checkpointing = False
    return model, torch


def measure(model, torch, batch: int, tokens: int) -> float:
    from voxfit.engines.fish.batched import BatchedDecoder, Sampling, Sequence, encode_prompt

    decoder = BatchedDecoder(model, batch, torch.float32, "cpu")
    prompt, masks, parts = encode_prompt(model, TEXT, None, None)
    seqs = []
    with torch.inference_mode():
        for slot in range(batch):
            seq = Sequence(slot=slot, prompt_len=prompt.shape[1], budget=tokens + 2,
                           sampling=Sampling(0.8, 0.8, 1.1, torch.Generator().manual_seed(slot)))
            decoder.prefill(seq, prompt, masks, parts)
            seqs.append(seq)
        decoder.step(seqs)  # warm-up step
        start = time.perf_counter()
        for _ in range(tokens):
            decoder.step(seqs)
        elapsed = time.perf_counter() - start
    del decoder
    return batch * tokens / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    model, torch = build_model()
    torch.set_num_threads(args.threads)
    params = sum(p.numel() for p in model.parameters())
    print(f"{time.strftime('%Y-%m-%d')}: S1-mini-shaped model, {params / 1e6:.0f} M parameters, fp32, "
          f"{args.threads} thread(s), {args.tokens} steps per batch size")
    base = None
    for batch in BATCHES:
        rate = measure(model, torch, batch, args.tokens)
        base = base or rate
        print(f"batch {batch}: {rate:.2f} tokens/s ({rate / base:.2f}x batch 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

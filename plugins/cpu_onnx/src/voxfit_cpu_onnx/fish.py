"""CPU proposals for Fish Speech (OpenAudio S1) checkpoints.

Two ways to run a fish checkpoint on the CPU, both fp32 (CPUs without AMX
have no fast fp16/bf16 matmul, and fish-speech's int8 path needs a fused
kernel that only a compiled CUDA build has):

* ``fish-torch``: fish-speech's model and codec on torch, end to end;
* ``fish-torch+onnx-codec``: the same LLM on torch, the codec decoder
  exported to ONNX (cached by checkpoint hash, checked against torch before
  it is trusted) and run on ONNX Runtime.

Threads: physical cores less one, for torch and ONNX Runtime alike
(hyper-threads share the FPUs and memory bandwidth that batch-1 decoding
is bound by; the spare core keeps one busy process from stalling every
thread barrier, see :func:`threads_for`). Nothing heavy is imported here until ``load``.
"""

from __future__ import annotations

from typing import Any

from voxfit.sdk import (
    DecodeCalibration,
    EngineLoadError,
    Estimate,
    HardwareProfile,
    ModelSpec,
    Proposal,
    Registry,
    Settings,
    decode_speed,
    plan_batch,
    tokens_per_audio_second,
)

from .proposal_options import CpuOptions

TORCH = "fish-torch"
ONNX_CODEC = "fish-torch+onnx-codec"
BACKENDS = (TORCH, ONNX_CODEC)

# The roofline: batch-1 autoregressive decoding reads every weight once per
# token (the fast transformer once per codebook), so tokens/s is about the
# achieved memory bandwidth / bytes read per token. MEASURED on the 2-core
# development machine with an S1-mini-shaped model (random weights, fp32, 4.58 GB
# read per token): 405-430 ms per token with 1 thread (~11 GB/s), 380-402 ms with
# 2 (~12 GB/s): one core nearly saturates what this machine delivers. Assumed
# beyond that: each further core adds a tenth, up to 25 GB/s.
BANDWIDTH_ONE_CORE = 11e9
BANDWIDTH_PER_EXTRA_CORE = 1.1e9
BANDWIDTH_CAP = 25e9
# Python and kernel-launch cost per generated token, per codebook (the fast
# transformer's loop): MEASURED on the tiny test checkpoint on a 2-core box
# (about 5.7 ms per token with 4 codebooks), where weights are negligible.
OVERHEAD_PER_CODEBOOK_S = 1.4e-3
# Share of the synthesis time the torch codec decoder takes for a full-size S1
# checkpoint on a CPU: ASSUMED (the tiny checkpoint's share says nothing about it).
CODEC_SHARE = 0.15
# ONNX Runtime decode vs torch decode (weight norm folded), same codes, one
# thread: MEASURED by benchmarks/fish_engine.py on the tiny checkpoint, 9 s of
# audio: 1.01x and 1.31x in two runs on a busy 2-core box (1.0-2.2x over all
# lengths). The longer-audio figure is used; the full-size decoder is unmeasured.
ONNX_DECODE_SPEEDUP = 1.3
# What the process holds besides the model: torch + fish-speech imported
# (MEASURED: about 480 MB max RSS with the tiny checkpoint loaded).
PROCESS_BASELINE = 500 * 2**20


def threads_for(hardware: HardwareProfile) -> int:
    """Physical cores less one (at least one).

    Batch-1 decoding is a long chain of small ops, each ending in a barrier of
    torch's thread pool; when another process holds one core, every barrier
    waits for a descheduled thread. MEASURED on this 2-core box with
    background load, same plan, tiny checkpoint: 2 threads 15-16 s, 1 thread
    2.5-2.9 s for the same 282 tokens. On a quiet machine with a full-size
    (S1-mini-shaped) model the second thread bought only ~6% (memory-bound):
    little to gain, a 6x loss to risk. Logical (hyper-)threads never count.
    """
    physical = hardware.cores_physical or max(1, (hardware.cores_logical or 2) // 2)
    return max(1, physical - 1)


def estimate(model: ModelSpec, hardware: HardwareProfile, backend: str,
             calibration: DecodeCalibration) -> tuple[Estimate, list[str]]:
    threads = threads_for(hardware)
    props = model.properties
    per_token_bytes = int(props.get("parameters_read_per_token") or model.parameter_count or 0) * 4
    codebooks = int(props.get("num_codebooks") or 10)
    bandwidth = min(BANDWIDTH_ONE_CORE + BANDWIDTH_PER_EXTRA_CORE * (threads - 1), BANDWIDTH_CAP)
    decode = decode_speed(calibration, per_token_bytes, bandwidth, tokens_per_audio_second(model),
                          overhead_s=OVERHEAD_PER_CODEBOOK_S * codebooks)
    tokens_per_s = decode.tokens_per_s
    llm_rtf = decode.rtf or 0.0
    codec_rtf = llm_rtf * CODEC_SHARE / (1 - CODEC_SHARE)
    if backend == ONNX_CODEC:
        codec_rtf /= ONNX_DECODE_SPEEDUP
    rtf = llm_rtf + codec_rtf
    memory = model.memory.get("fp32")
    peak = None
    if memory is not None:
        peak = memory.total_bytes + PROCESS_BASELINE
        if backend == ONNX_CODEC:
            peak += memory.codec_bytes // 2  # the ORT session holds the decoder's weights again (~half the codec)
    reasons = [
        f"{threads} thread{'s' if threads != 1 else ''} reading at ~{bandwidth / 1e9:.0f} GB/s (one thread measured "
        f"at 11 GB/s, ~1 GB/s per extra core assumed); {decode.reason}; codec adds ~{CODEC_SHARE:.0%} (assumed): "
        f"RTF ~{rtf:.1f} (field reports for S1-mini on CPUs: RTF 6-15)",
    ]
    return Estimate(rtf=rtf, tokens_per_s=tokens_per_s, peak_memory_bytes=peak), reasons


def _batch(model: ModelSpec, hardware: HardwareProfile, settings: Settings, est: Estimate) -> Any:
    """Sequences decoded together on the CPU: as many KV caches as the available RAM holds, up to the cap."""
    memory = model.memory.get("fp32")
    if memory is None or est.peak_memory_bytes is None or hardware.memory_available_bytes is None:
        return None
    usable = int(hardware.memory_available_bytes * (1.0 - settings.memory_headroom))
    return plan_batch(need_bytes=est.peak_memory_bytes, per_sequence_bytes=memory.kv_cache_bytes,
                      usable_bytes=usable, cap=settings.max_batch, where="available system RAM")


def _platform_vetoes(hardware: HardwareProfile) -> list[str]:
    """What rules the torch stack out on this platform, whatever the model."""
    if hardware.os == "darwin" and hardware.arch == "x86_64":
        return ["torch 2.13 (the version voxfit's fish extra pins) has no macOS x86_64 wheels: PyTorch stopped "
                "publishing Intel-Mac builds after 2.2 (docs/field-notes.md#torch-intel-mac)"]
    return []


def proposals(model: ModelSpec, hardware: HardwareProfile, settings: Settings, engines: Registry) -> list[Proposal]:
    threads = threads_for(hardware)
    platform_vetoes = _platform_vetoes(hardware)
    out = []
    for backend in BACKENDS:
        info, calibration = engines.engine(backend), engines.calibration_for(backend, "cpu")
        if info is None or calibration is None or not info.runs(model.family):
            continue  # this plugin places these engines on the CPU; other models are other plugins' to run
        est, reasons = estimate(model, hardware, backend, calibration)
        batch = _batch(model, hardware, settings, est)
        if batch is not None:
            est.peak_memory_bytes = batch.peak_bytes
            reasons.append(batch.reason)
        reasons.append(
            f"{threads} thread{'s' if threads != 1 else ''} for torch and ONNX Runtime: physical cores less one "
            f"({hardware.cores_physical} physical, {hardware.cores_logical} logical): on a 2-core server a second "
            "thread made an S1-mini-shaped model only ~6% faster when the machine was quiet, and 6x slower when "
            "another process held a core"
        )
        if backend == TORCH:
            reasons.insert(0, "fish-speech end to end on torch in fp32: nothing to export, the reference path")
            requires = ["torch", "fish_speech"]
            options = CpuOptions(codec_backend="torch")
        else:
            reasons.insert(
                0,
                f"codec decoder on ONNX Runtime: measured {ONNX_DECODE_SPEEDUP:.1f}x faster than torch's decode "
                f"on the tiny checkpoint; decode assumed {CODEC_SHARE:.0%} of the time for a full S1 model, "
                "so the gain is small",
            )
            reasons.append(
                "exported once on first use (about 20-45 s for the tiny codec here; longer for a full one) and "
                "cached by codec.pth hash; trusted only while it matches torch on probe codes, else the torch "
                "codec is used and the reason shown"
            )
            requires = ["torch", "fish_speech", "onnxruntime", "onnxscript"]
            options = CpuOptions(codec_backend="onnx")
        out.append(
            Proposal(
                device="cpu",
                device_family="cpu",
                engine=backend,
                precision="fp32",
                threads=threads,
                chunk_chars=300,  # a sentence or two: bounds the semantic tokens per sequence
                batch_size=batch.size if batch is not None else 1,
                options=options,
                requires=requires,
                memory_pool="system",
                estimate=est,
                score=1.0 / est.rtf if est.rtf else 0.0,
                reasons=reasons,
                vetoes=list(platform_vetoes),
            )
        )
    return out


def load(proposal: Proposal, model: ModelSpec, settings: Settings, engines: Registry) -> Any:
    """Load a fish engine for one of this plugin's proposals (heavy imports happen here)."""
    try:
        load_fish_engine = engines.loader(proposal.engine)
    except (LookupError, ImportError) as exc:
        raise EngineLoadError(f"the {proposal.engine} engine cannot be loaded: {exc}") from None
    opts = proposal.options

    return load_fish_engine(
        model,
        device="cpu",
        precision=proposal.precision,
        quantization=proposal.quantization,
        compile=proposal.compile,
        threads=proposal.threads,
        codec_backend=(opts.codec_backend if isinstance(opts, CpuOptions) else None) or "torch",
        cache_dir=settings.cache_dir,
        batch_size=proposal.batch_size,
        planned_tokens_per_s=proposal.estimate.tokens_per_s,
    )

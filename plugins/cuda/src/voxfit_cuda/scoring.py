"""Proposals for Fish Speech models on NVIDIA GPUs: memory fit, precision, quantization, compile, speed.

Every number below is either read from the model spec / hardware profile or
is a named constant with the evidence it rests on; each proposal's reasons
repeat the ones that decided it, so a plan can be checked by a person.

Speed model: the core's shared decode roofline (``voxfit.sdk.decode_speed``)
with the engine's own calibration for CUDA (``EngineInfo.decode["cuda"]``,
registered by the engine's plugin, with its source), the same scale the MPS
and CPU plugins use:

    seconds per token = bytes read per token / (efficiency x bandwidth) + overhead per token
    RTF               = tokens per audio second (from the model spec) / tokens/s
    score             = 1 / RTF, multiplied down for risk (shared GPU, vGPU, int8, tight memory)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from voxfit.sdk import (
    AcceleratorDevice,
    BatchPlan,
    DecodeCalibration,
    Estimate,
    HardwareProfile,
    ModelSpec,
    Proposal,
    ProposalFacts,
    Registry,
    Settings,
    decode_speed,
    describe_memory,
    plan_batch,
    tokens_per_audio_second,
)

from .nvml_probe import BUSY_MEMORY_SHARE, BUSY_UTILIZATION_PERCENT, triton_importable
from .proposal_options import CudaOptions

GiB = 2**30
ENGINE = "fish-torch"

# What the model spec does not count: the CUDA context (kernels, cuBLAS/cuDNN
# workspaces) that every process pays on first CUDA use, typically 0.3-0.5 GiB.
CUDA_CONTEXT_BYTES = int(0.4 * GiB)
# PyTorch caching-allocator slack and the codec decoder's activations for a
# chunk. Calibrated, not derived: docs/field-notes.md records about 4.5 GB in use for
# S1-mini in fp16 on an RTX 3060; the spec's 3.36 GiB plus the context leaves
# about 0.5 GiB unexplained, which this allowance covers.
ALLOCATOR_AND_DECODE_BYTES = int(0.5 * GiB)

# Decoding speed comes from the core's shared roofline (voxfit.sdk.decode_speed) with the engine's CUDA
# calibration (fish-speech's: calibrated on the field notes' RTX 3060, RTF 2-3 in fp16);
# benchmarks/cuda_real_gpu.py measures it on a real card. torch.compile's speed-up is the calibration's too,
# so the WSL plugin's compiled twin uses the same figure.
COMPILE_STARTUP = "minutes of compilation at start-up (docs/field-notes.md), paid again in every new process"
INT8_RISK = 0.9  # weight-only int8 changes the voice slightly; taken only when 16-bit does not fit
VGPU_RISK = 0.5  # the field notes' V100 vGPU reached 3.89 GB/s: a virtual GPU may be far below its card
TIGHT_FIT_SHARE = 0.85  # above this share of usable memory, longer inputs risk running out
TIGHT_FIT_RISK = 0.9
MEMORY_BUSY_RISK = 0.85  # others' memory may grow and push the model out
# Laptop GPUs that overflow do not fail: the driver spills into system RAM.
SPILL_EVIDENCE = ("docs/field-notes.md records exactly this on an RTX 3050 Laptop 4 GB: 5.97 GB used, spilled into "
                  "system RAM, RTF 40-144, against RTF 6-8 on that laptop's CPU")


def _cc(device: AcceleratorDevice) -> tuple[int, int]:
    raw = str(device.capabilities.get("compute_capability", "0.0"))
    try:
        major, minor = raw.split(".")
        return int(major), int(minor)
    except ValueError:
        return 0, 0


def need_bytes(model: ModelSpec, key: str) -> Optional[int]:
    estimate = model.memory.get(key)
    if estimate is None:
        return None
    return estimate.total_bytes + CUDA_CONTEXT_BYTES + ALLOCATOR_AND_DECODE_BYTES


@dataclass
class CompileDecision:
    compile: bool
    reason: str
    #: why compile is off, as a field other plugins read (the WSL plugin lifts "os"):
    #: "os" (no Triton on this OS), "no-triton", "unknown-triton", "old-gpu"; "" when compiled.
    blocked: str = ""


def compile_decision(hardware: HardwareProfile, device: AcceleratorDevice,
                     speedup: float = 1.0) -> CompileDecision:
    """torch.compile needs Linux (native or WSL2), Triton, and a GPU Triton supports (compute capability 7.0+).

    Whether Triton is installed is taken from the profile's ``triton`` flag,
    which this plugin's detect records; for a detected profile without it,
    from this machine; for a saved profile without it, it is unknown and
    compile is not proposed (what is installed here says nothing about there).
    """
    if hardware.os != "linux":
        return CompileDecision(False, f"no torch.compile: {hardware.os} has no working Triton "
                                      "(docs/field-notes.md: 'Cannot find a working triton installation' on native "
                                      "Windows)", blocked="os")
    triton = hardware.flags.get("triton")
    if triton is None:
        if hardware.source == "detected":
            triton = triton_importable()
        else:
            return CompileDecision(False, "no torch.compile: the saved profile does not say whether Triton is "
                                          "installed there (profiles from `voxfit detect --json` record it)",
                                   blocked="unknown-triton")
    if not triton:
        return CompileDecision(False, "no torch.compile: Triton is not installed (pip install triton)",
                               blocked="no-triton")
    if _cc(device) < (7, 0):
        return CompileDecision(False, f"no torch.compile: Triton needs compute capability 7.0+, "
                                      f"{device.name} has {'.'.join(map(str, _cc(device)))}", blocked="old-gpu")
    return CompileDecision(True, f"torch.compile with Triton: ~{speedup - 1:.0%} faster decoding "
                                 f"(docs/field-notes.md: 20-30% on Linux) at the cost of {COMPILE_STARTUP}")


def _precision(device: AcceleratorDevice) -> tuple[str, str]:
    cc = _cc(device)
    shown = f"{cc[0]}.{cc[1]}"
    if cc >= (8, 0):
        return "bf16", f"bf16: compute capability {shown} has native bfloat16 (8.0+)"
    if cc >= (7, 0):
        return "fp16", f"fp16: compute capability {shown} has no native bfloat16 (needs 8.0+)"
    return "fp32", f"fp32: compute capability {shown} runs fp16 at a small fraction of fp32 speed on most cards"


def _bytes_per_weight(precision: str, quantization: str, compiled: bool) -> tuple[float, str]:
    if quantization == "none":
        return (4.0 if precision == "fp32" else 2.0), ""
    if compiled:
        return 1.0, "int8 weights read 1 byte each when compiled kernels fuse the dequantisation"
    return 2.0, ("int8 weights counted as 2 bytes read: without compile each matmul materialises a "
                 "16-bit copy, so int8 saves memory, not time")


def _veto_memory(device: AcceleratorDevice, model: ModelSpec, need16: int, need8: Optional[int],
                 precision: str, usable: int, headroom: float) -> str:
    total = device.memory_total_bytes or 0
    small = total and total * (1.0 - headroom) < (need8 or need16)  # would not fit even with the GPU idle
    both = f"{model.name} needs ~{describe_memory(need16)} in {precision}" + (
        f" and ~{describe_memory(need8)} with int8 weights" if need8 else "")
    if small:
        return (f"{describe_memory(total)} GPU too small: {both} (incl. CUDA context and working set), "
                f"{describe_memory(usable)} usable; it would spill into system RAM or run out of memory. "
                + SPILL_EVIDENCE)
    return (f"not enough free GPU memory: {both}, only {describe_memory(usable)} usable of "
            f"{describe_memory(device.memory_free_bytes)} free (other processes hold the rest)")


@dataclass
class _Fit:
    """How the model fits this GPU's free memory: what it needs, at which quantization, and why."""

    need: Optional[int]
    need16: Optional[int]
    quantization: str
    usable: int
    reason: str
    vetoes: list[str]

    @property
    def overflows(self) -> bool:
        return self.need16 is not None and self.quantization == "none" and self.need16 > self.usable


def _fit(device: AcceleratorDevice, model: ModelSpec, precision: str, settings: Settings) -> _Fit:
    free = device.memory_free_bytes or 0
    usable = int(free * (1.0 - settings.memory_headroom))
    need16, need8 = need_bytes(model, precision), need_bytes(model, "int8")
    quantization, need = "none", need16
    if need16 is not None and need16 > usable and need8 is not None and need8 <= usable:
        quantization, need = "int8-weight-only", need8
    fit = _Fit(need, need16, quantization, usable, "", [])
    if need is None:
        fit.reason = f"memory: the model spec gives no {precision} estimate; fit not checked"
        return fit
    spec_est = model.memory[precision if quantization == "none" else "int8"]
    fit.reason = (
        f"memory: ~{describe_memory(need)} = weights {describe_memory(spec_est.weights_bytes)} + KV cache "
        f"{describe_memory(spec_est.kv_cache_bytes)} + codec {describe_memory(spec_est.codec_bytes)} + buffers "
        f"{describe_memory(spec_est.buffers_bytes)} + CUDA context {describe_memory(CUDA_CONTEXT_BYTES)} + "
        f"allocator/decoder {describe_memory(ALLOCATOR_AND_DECODE_BYTES)}; "
        f"{describe_memory(usable)} usable of {describe_memory(free)} free ({settings.memory_headroom:.0%} headroom)"
    )
    if quantization != "none":
        fit.reason = (f"int8 weight-only: {precision} needs ~{describe_memory(need16)}, more than the "
                      f"{describe_memory(usable)} usable; int8 weights fit. ") + fit.reason
    elif fit.overflows and need16 is not None:
        fit.vetoes.append(_veto_memory(device, model, need16, need8, precision, usable, settings.memory_headroom))
    return fit


def _bandwidth(device: AcceleratorDevice) -> tuple[float, str]:
    bandwidth = device.capabilities.get("bandwidth_gbps")
    if not isinstance(bandwidth, (int, float)) or bandwidth <= 0:
        return 100.0, "memory bandwidth unknown (NVML gave no bus width or clock): assumed a low 100 GB/s"
    reason = (f"bandwidth {bandwidth:.0f} GB/s ({device.capabilities.get('memory_bus_width_bits')} bit x "
              f"{device.capabilities.get('memory_clock_mhz')} MHz x 2)")
    if "mig-instance" in device.flags:
        reason += ", this MIG instance's share of the card"
    return float(bandwidth), reason


def _speed(device: AcceleratorDevice, model: ModelSpec, per_weight: float, compiled: bool, overflows: bool,
           calibration: DecodeCalibration) -> tuple[Optional[float], Optional[float], list[str]]:
    """(tokens/s, RTF, reasons) on the roofline with the engine's CUDA calibration."""
    bandwidth, bw_reason = _bandwidth(device)
    params = model.properties.get("parameters_read_per_token") or model.properties.get("llm_parameters")
    if not isinstance(params, int) or params <= 0:
        return None, None, [bw_reason]
    speed = decode_speed(calibration, params * per_weight, bandwidth * 1e9, tokens_per_audio_second(model),
                         speedup=calibration.compile_speedup if compiled else 1.0, speedup_reason="compiled")
    if overflows and speed.rtf is not None:
        # Overflowing GPUs do not run at the roofline's pace: they page through system RAM (RTF 40-144 measured).
        return None, None, [bw_reason, "only had it fit in GPU memory: " + speed.reason]
    return speed.tokens_per_s, speed.rtf, [bw_reason, speed.reason]


def _load_risks(device: AcceleratorDevice) -> tuple[dict[str, float], list[str]]:
    """Score factors for other work on the GPU, and their reasons."""
    factors: dict[str, float] = {}
    risks: list[str] = []
    total = device.memory_total_bytes or device.memory_free_bytes or 0
    others = max(0, total - (device.memory_free_bytes or 0))
    util = device.utilization_percent or 0.0
    if util >= BUSY_UTILIZATION_PERCENT:
        factor = max(0.1, 1.0 - util / 100.0)
        factors[f"{device.id} busy ({util:.0f}% utilised by other work)"] = factor
        risks.append(f"busy: {util:.0f}% utilised by other work, which shares its bandwidth (score x {factor:.2f})")
    if total and others >= BUSY_MEMORY_SHARE * total:
        factors[f"{device.id} memory held by other processes"] = MEMORY_BUSY_RISK
        procs = device.capabilities.get("process_list") or f"{device.capabilities.get('processes', '?')} process(es)"
        risks.append(f"busy: {describe_memory(others)} of {describe_memory(total)} already in use ({procs}); "
                     f"that work may grow (score x {MEMORY_BUSY_RISK})")
    if risks:
        risks.append("the device is chosen once, at plan time: a loaded model is never moved to another "
                     "GPU or the CPU if this load changes (docs/field-notes.md: moving a loaded model breaks it)")
    return factors, risks


def _other_risks(device: AcceleratorDevice, fit: _Fit) -> tuple[float, list[str]]:
    """Score multipliers for what may go wrong besides load (int8 voice, vGPU, tight fit), and the preference
    for the GPU with the most free memory."""
    factor, risks = 1.0, []
    if fit.quantization != "none":
        factor *= INT8_RISK
        risks.append(f"int8 weights may change the voice slightly (score x {INT8_RISK})")
    if "vgpu" in device.flags:
        factor *= VGPU_RISK
        risks.append(f"virtual GPU (vGPU): the field notes' V100 vGPU reached only 3.89 GB/s (score x {VGPU_RISK})")
    if fit.need is not None and fit.usable and fit.need > TIGHT_FIT_SHARE * fit.usable and not fit.vetoes:
        factor *= TIGHT_FIT_RISK
        risks.append(f"tight fit: needs {fit.need / fit.usable:.0%} of usable memory; long inputs may not fit "
                     f"(score x {TIGHT_FIT_RISK})")
    free, total = device.memory_free_bytes or 0, device.memory_total_bytes or device.memory_free_bytes or 0
    if total:
        prefer = 0.9 + 0.1 * free / total
        factor *= prefer
        risks.append(f"free-memory preference: {free / total:.0%} of {device.id} free (score x {prefer:.3f})")
    return factor, risks


def _device_vetoes(device: AcceleratorDevice) -> list[str]:
    vetoes = []
    if "mig" in device.flags:
        vetoes.append(f"MIG is enabled on {device.id}: CUDA work can run only on its MIG instances")
    if "unreadable" in device.flags:
        vetoes.append(f"{device.id} could not be read through NVML: {device.name}")
    return vetoes


def _batch(device: AcceleratorDevice, model: ModelSpec, fit: _Fit, precision: str,
           settings: Settings) -> Optional[BatchPlan]:
    """Sequences decoded together on this GPU: as many KV caches as its usable free memory holds, up to the cap."""
    if fit.need is None or fit.vetoes:
        return None
    spec = model.memory.get(precision if fit.quantization == "none" else "int8")
    if spec is None:
        return None
    return plan_batch(need_bytes=fit.need, per_sequence_bytes=spec.kv_cache_bytes, usable_bytes=fit.usable,
                      cap=settings.max_batch, where=f"{device.id}'s free memory")


def propose(device: AcceleratorDevice, model: ModelSpec, hardware: HardwareProfile,
            settings: Settings, calibration: DecodeCalibration) -> Proposal:
    """One proposal for ``model`` on ``device``, vetoed (never dropped) when it cannot work."""
    precision, precision_reason = _precision(device)
    fit = _fit(device, model, precision, settings)
    decision = compile_decision(hardware, device, calibration.compile_speedup)
    per_weight, weight_reason = _bytes_per_weight(precision, fit.quantization, decision.compile)
    tokens_per_s, rtf, speed_reasons = _speed(device, model, per_weight, decision.compile, fit.overflows, calibration)
    factors, load_risks = _load_risks(device)
    other, other_risks = _other_risks(device, fit)
    score = (1.0 / rtf if rtf else 0.01) * other
    for value in factors.values():
        score *= value
    headline = f"{device.name} ({device.id})"
    if rtf is not None:
        headline += f": RTF ~{rtf:.2f}, ~{tokens_per_s:.0f} tokens/s"
    if fit.need is not None:
        headline += f", needs ~{describe_memory(fit.need)} of {describe_memory(device.memory_free_bytes)} free"
    batch = _batch(device, model, fit, precision, settings)
    reasons = [headline, precision_reason, fit.reason, decision.reason, *filter(None, [weight_reason]),
               *speed_reasons, *([batch.reason] if batch else []), *load_risks, *other_risks]
    return Proposal(
        device=device.id, device_family="cuda", engine=ENGINE, precision=precision, quantization=fit.quantization,
        compile=decision.compile, threads=None, chunk_chars=400,
        options=CudaOptions(uuid=str(device.capabilities.get("uuid", "")),
                            nvml_index=int(device.capabilities.get("nvml_index", device.index) or 0)),
        requires=["torch", "fish_speech"] + (["triton"] if decision.compile else []), memory_pool="device",
        batch_size=batch.size if batch else 1,
        estimate=Estimate(rtf=rtf, peak_memory_bytes=batch.peak_bytes if batch else fit.need,
                          tokens_per_s=tokens_per_s),
        score=round(score, 4), reasons=reasons, vetoes=_device_vetoes(device) + fit.vetoes,
        facts=ProposalFacts(compile_blocked=decision.blocked), score_factors=factors,
    )


def propose_all(model: ModelSpec, hardware: HardwareProfile, settings: Settings, engines: Registry) -> list[Proposal]:
    calibration = engines.calibration_for(ENGINE, "cuda")
    info = engines.engine(ENGINE)
    if calibration is None or info is None or not info.runs(model.family):
        return []  # this plugin places one engine on NVIDIA GPUs; other models run elsewhere
    gpus = [d for d in hardware.devices if d.family == "cuda"]
    failed = str(hardware.flags.get("nvml", ""))
    if not gpus and failed.startswith("failed"):
        # Say so in the plan rather than only in `voxfit detect`'s notes: the user has a GPU and will ask why.
        return [Proposal(
            device="cuda:0", device_family="cuda", engine=ENGINE, memory_pool="device", score=0.0,
            reasons=["an NVIDIA driver is present but NVML could not read its GPUs"],
            vetoes=[f"NVML {failed}: the GPU's memory, capability and load are unknown, so no GPU plan can be "
                    "checked; fix the driver (after a driver update, a reboot clears a version mismatch) and "
                    "run `voxfit detect` again"],
        )]
    return [propose(d, model, hardware, settings, calibration) for d in gpus]

"""Proposals for Fish Speech models on an Apple Silicon GPU (MPS).

Decisions, each carried into the proposal's reasons:

* fp16 always: the field notes' rule for MPS. int8 and torch.compile are shown
  as vetoed proposals, with the measurements that rule them out, so a user
  sees they were considered.
* Memory: the GPU shares the Mac's unified memory, so proposals use
  ``memory_pool="system"`` and the core checks them against available RAM
  with its headroom. On top, this plugin keeps back what macOS and the
  desktop need (``os_reserve``) from the total, and says plainly when a small
  Mac is tight.
* Speed: tokens/s = 1 / (bytes read per token / achieved bandwidth + fixed
  per-token overhead). See the constants for where each number comes from.
"""

from __future__ import annotations

from typing import Optional

from voxfit.sdk import (
    AcceleratorDevice,
    BatchPlan,
    DecodeCalibration,
    Estimate,
    HardwareProfile,
    ModelSpec,
    Proposal,
    Registry,
    Settings,
    decode_speed,
    describe_memory,
    plan_batch,
    tokens_per_audio_second,
)

from .proposal_options import MpsOptions

GiB = 2**30
ENGINE = "fish-torch"
COREML_ENGINE = "fish-torch+coreml-codec"

# macOS, WindowServer and a browser keep about 3 GiB on any Mac; on larger Macs
# Metal's recommended GPU working set is about three quarters of RAM. What the
# model may use of unified memory is the total less the larger of the two.
OS_RESERVE_MIN = 3 * GiB
OS_RESERVE_SHARE = 0.25
# Metal device, MPS allocator caches and the codec's activations for one chunk;
# not counted by the model spec. An allowance, like the CUDA plugin's context.
MPS_RUNTIME_BYTES = int(0.5 * GiB)
TIGHT_SHARE = 0.75  # above this share of the model budget, or on an 8 GB Mac, the fit is called tight
TIGHT_RISK = 0.85
# Speed: the core's shared decode roofline (voxfit.sdk.decode_speed, constants
# "mps-eager": 60% of the chip's bandwidth plus a per-token overhead taken from
# the CUDA calibration, since fish-speech's eager loop launches the same ~800
# small kernels per token on either GPU; the reasons say it is assumed).
UNMEASURED_RISK = 0.8  # no fp16-on-MPS measurement in docs/field-notes.md: the estimate is a model, not a measurement
COREML_RISK = 0.95  # same LLM path, codec on Core ML: unmeasured, and the first load converts (minutes)
FIELD_INT8 = "docs/field-notes.md, M1 Air 8 GB: MPS with INT8 ran at RTF 95.6, 0.61 tokens/s, 0.52 GB/s: INT8 ops fall back to the CPU one by one (the same Mac's CPU alone: RTF ~15)"
FIELD_COMPILE = "docs/field-notes.md: torch.compile on macOS + MPS hangs with runaway process spawning"


def os_reserve(total: int) -> int:
    return max(OS_RESERVE_MIN, int(OS_RESERVE_SHARE * total))


def need_bytes(model: ModelSpec, key: str) -> Optional[int]:
    estimate = model.memory.get(key)
    return None if estimate is None else estimate.total_bytes + MPS_RUNTIME_BYTES


def speed(model: ModelSpec, device: AcceleratorDevice,
          calibration: DecodeCalibration) -> tuple[Optional[float], Optional[float], list[str]]:
    """(tokens/s, RTF, reasons) for fp16 weights on this chip; (None, None, why) when it cannot be estimated."""
    params = model.properties.get("parameters_read_per_token") or model.properties.get("llm_parameters")
    bandwidth = device.capabilities.get("bandwidth_gbps")
    reasons = []
    if device.capabilities.get("bandwidth_source"):
        reasons.append(f"bandwidth: {device.capabilities['bandwidth_source']}")
    if not isinstance(params, int) or params <= 0:
        return None, None, reasons + ["speed: the model spec does not say how many weights a token reads"]
    if not isinstance(bandwidth, (int, float)) or bandwidth <= 0:
        bandwidth = 68.25
        reasons.append("bandwidth: chip unknown, assumed the lowest Apple Silicon figure (M1, 68 GB/s)")
    decode = decode_speed(calibration, params * 2, bandwidth * 1e9, tokens_per_audio_second(model))
    reasons.append(decode.reason)
    tokens_per_s, rtf = decode.tokens_per_s, decode.rtf
    return tokens_per_s, rtf, reasons


def _fit(model: ModelSpec, device: AcceleratorDevice, hardware: HardwareProfile, key: str
         ) -> tuple[Optional[int], list[str], list[str], float]:
    """(bytes needed, reasons, vetoes, score factor) for the model at `key` in unified memory."""
    need = need_bytes(model, key)
    total = device.memory_total_bytes or hardware.memory_total_bytes
    if need is None:
        return None, [f"memory: the model spec gives no {key} estimate; fit not checked"], [], 1.0
    if not total:
        return need, ["memory: unified memory size unknown; fit not checked"], [], 1.0
    reserve = os_reserve(total)
    budget = total - reserve
    where = (f"needs ~{describe_memory(need)} ({describe_memory(need - MPS_RUNTIME_BYTES)} model + "
             f"{describe_memory(MPS_RUNTIME_BYTES)} Metal/allocator) of {describe_memory(budget)} unified memory "
             f"left after keeping {describe_memory(reserve)} of {describe_memory(total)} for macOS and other apps")
    if need > budget:
        return need, [f"memory: {where}"], [f"does not fit: {where}"], 1.0
    small = total <= 8 * GiB
    if small or need > TIGHT_SHARE * budget:
        why = "an 8 GB Mac" if small else f"{need / budget:.0%} of the budget"
        return need, [
            f"memory: tight ({why}): {where}; close other apps (browsers) first, or macOS swaps and speech slows "
            f"to a crawl (score x {TIGHT_RISK})"
        ], [], TIGHT_RISK
    return need, [f"memory: fits: {where}"], [], 1.0


def _batch(model: ModelSpec, hardware: HardwareProfile, device: AcceleratorDevice, need: Optional[int],
           settings: Settings) -> Optional[BatchPlan]:
    """Sequences decoded together: as many KV caches as unified memory holds beside macOS's share and what is
    available now (with the planner's headroom), up to the cap (``max_batch``)."""
    total = device.memory_total_bytes or hardware.memory_total_bytes
    spec = model.memory.get("fp16")
    if need is None or not total or spec is None:
        return None
    usable = total - os_reserve(total)
    if hardware.memory_available_bytes:
        usable = min(usable, int(hardware.memory_available_bytes * (1.0 - settings.memory_headroom)))
    return plan_batch(need_bytes=need, per_sequence_bytes=spec.kv_cache_bytes, usable_bytes=usable,
                      cap=settings.max_batch, where="unified memory left for voxfit")


def _fit_batched(model: ModelSpec, device: AcceleratorDevice, hardware: HardwareProfile,
                 settings: Settings) -> tuple[Optional[int], list[str], list[str], float, int]:
    """:func:`_fit` in fp16, with the batch that fits: (need, reasons, vetoes, score factor, batch size)."""
    need, reasons, vetoes, factor = _fit(model, device, hardware, "fp16")
    batch = _batch(model, hardware, device, need, settings) if not vetoes else None
    if batch is None:
        return need, reasons, vetoes, factor, 1
    return batch.peak_bytes, [*reasons, batch.reason], vetoes, factor, batch.size


def propose(model: ModelSpec, hardware: HardwareProfile, device: AcceleratorDevice,
            calibration: DecodeCalibration, settings: Settings) -> list[Proposal]:
    need, fit_reasons, fit_vetoes, fit_factor, batch_size = _fit_batched(model, device, hardware, settings)
    tokens_per_s, rtf, speed_reasons = speed(model, device, calibration)
    unavailable: list[str] = []
    mps = device.capabilities.get("mps_available")
    if mps is False:
        unavailable.append(f"MPS is not usable here: {device.capabilities.get('mps_status', 'torch says no')}")
    elif mps is None:
        speed_reasons.append(f"MPS availability: {device.capabilities.get('mps_status', 'unknown')}")
    mps_vetoes = fit_vetoes + unavailable
    score = (1.0 / rtf if rtf else 0.01) * UNMEASURED_RISK * fit_factor
    headline = f"{device.name} GPU through MPS, fp16" + (f": RTF ~{rtf:.2f}, ~{tokens_per_s:.1f} tokens/s" if rtf else "")
    common = [
        "fp16 on MPS (the field notes' rule for Apple GPUs; never int8 there)",
        "no torch.compile (" + FIELD_COMPILE + ")",
        "unified memory: the GPU and the CPU share RAM, so the fit is checked against system memory",
    ]
    risk = f"estimate from bandwidth, not measured on MPS (score x {UNMEASURED_RISK})"
    estimate = Estimate(rtf=rtf, tokens_per_s=tokens_per_s, peak_memory_bytes=need)
    base = dict(device=device.id, device_family="mps", precision="fp16", memory_pool="system", threads=None,
                chunk_chars=400, requires=["torch", "fish_speech"], batch_size=batch_size)
    proposals = [
        Proposal(engine=ENGINE, estimate=estimate, score=round(score, 4), vetoes=mps_vetoes,
                 reasons=[headline, *common, *fit_reasons, *speed_reasons, risk], **base),
    ]
    # Core ML codec: the language model stays on MPS, the codec decoder runs as a Core ML ML program (fp16).
    coreml_vetoes = list(mps_vetoes)
    macos_major = _major(str(device.capabilities.get("macos", "")))
    if macos_major is not None and macos_major < 13:
        coreml_vetoes.append(f"the converted codec is an ML program for macOS 13+; this Mac runs {device.capabilities['macos']}")
    proposals.append(Proposal(
        engine=COREML_ENGINE, estimate=estimate, score=round(score * COREML_RISK, 4), vetoes=coreml_vetoes,
        options=MpsOptions(codec_backend="coreml", coreml_compute_units="ALL"),
        reasons=[
            f"{device.name}: language model on MPS in fp16, codec decoder as a Core ML ML program (fp16)",
            "the codec decoder is converted once with coremltools and cached by the hash of codec.pth "
            "(the first load takes minutes); Core ML may run it on the Neural Engine, leaving the GPU to the "
            "language model",
            *fit_reasons, *speed_reasons,
            f"unmeasured: ranked just below the all-torch path (score x {UNMEASURED_RISK} x {COREML_RISK})",
        ],
        **{**base, "requires": ["torch", "fish_speech", "coremltools"]},
    ))
    # Shown so the user sees why not: int8 and torch.compile on MPS.
    int8_need = need_bytes(model, "int8")
    proposals.append(Proposal(
        engine=ENGINE, quantization="int8-weight-only", score=round(1 / 95.6, 4),
        estimate=Estimate(rtf=95.6, tokens_per_s=0.61, peak_memory_bytes=int8_need),
        reasons=["int8 weights would save memory on a small Mac"],
        vetoes=["never int8 on MPS: " + FIELD_INT8, *unavailable], **base,
    ))
    proposals.append(Proposal(
        engine=ENGINE, compile=True, score=0.0, estimate=Estimate(peak_memory_bytes=need),
        reasons=["torch.compile speeds decoding 20-30% on Linux + NVIDIA (docs/field-notes.md)"],
        vetoes=["never torch.compile on MPS: " + FIELD_COMPILE, *unavailable], **base,
    ))
    return proposals


def _major(version: str) -> Optional[int]:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return None


def propose_all(model: ModelSpec, hardware: HardwareProfile, settings: Settings, engines: Registry) -> list[Proposal]:
    """Every MPS proposal, each batch sized within the settings' cap and memory headroom."""
    calibration = engines.calibration_for(ENGINE, "mps")
    info = engines.engine(ENGINE)
    if calibration is None or info is None or not info.runs(model.family):
        return []  # this plugin places one engine on Apple GPUs; other models run elsewhere
    return [p for device in hardware.devices if device.family == "mps"
            for p in propose(model, hardware, device, calibration, settings)]

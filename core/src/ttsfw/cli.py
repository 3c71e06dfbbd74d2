"""The ``ttsfw`` command line.

Every failure the user can cause ends as one ``error: ...`` line on stderr
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from . import cpu_load

cpu_load.mark()  # the CPU-load window starts with the process: the plan reads it later without waiting

import click  # noqa: E402

from . import __version__  # noqa: E402
from .errors import TtsfwError, UsageError  # noqa: E402

# pydantic models and settings are imported where they are used: a plan reused from the
# plan cache needs neither (see ttsfw.plan_cache).
if TYPE_CHECKING:
    from .models import HardwareProfile, Plan, Proposal
    from .settings import Settings


def describe_memory(n: Optional[int]) -> str:
    from .hardware import describe_memory as describe

    return describe(n)


class Context:
    """What the group options decided, handed to every subcommand."""

    def __init__(self, blocked: list[str], allowed: list[str], strict: Optional[bool]) -> None:
        self.blocked, self.allowed, self.strict = blocked, allowed, strict

    def settings(self, **overrides: Any) -> Settings:
        from .settings import load_settings

        base = load_settings(strict=self.strict, **overrides)
        update: dict[str, Any] = {}
        if self.blocked:
            update["block_plugins"] = sorted(set(base.block_plugins) | set(self.blocked))
        if self.allowed:
            update["allow_plugins"] = sorted(set(base.allow_plugins or []) | set(self.allowed))
        return base.model_copy(update=update) if update else base

    def host(self, settings: Settings):  # -> PluginHost
        from .plugins import PluginHost

        return PluginHost.from_entry_points(settings)


def _parse_plugin_options(values: tuple[str, ...]) -> list[str]:
    blocked = []
    for value in values:
        if not value.startswith("no:") or not value[3:]:
            raise UsageError(f"-p expects no:NAME to block a plugin, got {value!r}")
        blocked.append(value[3:])
    return blocked


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ttsfw")
@click.option("-p", "plugin_options", multiple=True, metavar="no:NAME", help="Block a plugin by name (repeatable).")
@click.option("--allow-plugin", "allowed", multiple=True, metavar="NAME", help="Load only these plugins (repeatable).")
@click.option("--strict/--no-strict", default=None, help="Turn plugin failures into errors (TTSFW_STRICT).")
@click.pass_context
def main(ctx: click.Context, plugin_options: tuple[str, ...], allowed: tuple[str, ...], strict: Optional[bool]) -> None:
    """Hardware-aware runtime for neural text-to-speech."""
    ctx.obj = Context(_parse_plugin_options(plugin_options), list(allowed), strict)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- plugins -----------------------------------------------------------------


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plugins_cmd(obj: Context, as_json: bool) -> None:
    """List the plugins found, what they implement and their status."""
    host = obj.host(obj.settings())
    if as_json:
        _emit_json([info.model_dump(mode="json") for info in host.infos])
        return
    if not host.infos:
        click.echo("no plugins installed (pip install 'ttsfw[all]')")
        return
    rows = [("NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS")]
    for info in host.infos:
        rows.append(
            (info.name, info.distribution or "-", info.version or "-", info.status, ", ".join(info.hooks) or "-")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for info, row in zip([None, *host.infos], rows, strict=True):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
        if info is not None and info.error:
            click.echo(f"    {info.status}: {info.error}")


# -- detect ------------------------------------------------------------------


def _device_line(d: Any) -> str:
    memory = ""
    if d.memory_total_bytes is not None:
        memory = f", {describe_memory(d.memory_free_bytes)} free of {describe_memory(d.memory_total_bytes)}"
    util = f", {d.utilization_percent:.0f}% busy" if d.utilization_percent is not None else ""
    caps = ", ".join(f"{k}={v}" for k, v in d.capabilities.items())
    flags = f" [{', '.join(d.flags)}]" if d.flags else ""
    return f"  {d.id}: {d.name}{memory}{util}{flags}" + (f"\n      {caps}" if caps else "") + f"  (by {d.detected_by})"


def _print_hardware(hw: HardwareProfile) -> None:
    click.echo(f"OS:       {hw.os} {hw.os_release} ({hw.arch}), Python {hw.python}")
    click.echo(f"CPU:      {hw.cpu_model}, {hw.cores_physical} physical / {hw.cores_logical} logical cores")
    if hw.isa_flags:
        click.echo(f"ISA:      {' '.join(hw.isa_flags)}")
    click.echo(
        f"Memory:   {describe_memory(hw.memory_available_bytes)} available of {describe_memory(hw.memory_total_bytes)}"
    )
    if hw.flags:
        click.echo("Flags:    " + ", ".join(f"{k}={v}" for k, v in hw.flags.items()))
    click.echo("Devices:" + ("" if hw.devices else "  none reported by plugins"))
    for device in hw.devices:
        click.echo(_device_line(device))
    for note in hw.notes:
        click.echo(f"  note: {note}")
    if hw.source != "detected":
        click.echo(f"Source:   {hw.source}")


@main.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON (what `plan --hardware` accepts).")
@click.pass_obj
def detect_cmd(obj: Context, as_json: bool) -> None:
    """Describe this machine as the plugins see it."""
    from .planner import detect

    host = obj.host(obj.settings())
    profile = detect(host)
    if as_json:
        _emit_json(profile.model_dump(mode="json"))
        return
    _print_hardware(profile)
    for problem in host.problems:
        click.echo(f"plugin problem: {problem.plugin}.{problem.hook}: {problem.error}", err=True)


# -- plan --------------------------------------------------------------------


def _estimate(p: Proposal) -> str:
    e = p.estimate
    parts = []
    if e.rtf is not None:
        parts.append(f"RTF ~{e.rtf:.2f}")
    if e.tokens_per_s is not None:
        parts.append(f"~{e.tokens_per_s:.1f} tokens/s")
    if e.peak_memory_bytes is not None:
        parts.append(f"peak ~{describe_memory(e.peak_memory_bytes)}")
    return ", ".join(parts) or "no estimate"


def _print_entry(marker: str, headline: str, reasons: list[str]) -> None:
    click.echo(f"  {marker} {headline}")
    for reason in reasons:
        click.echo(f"       - {reason}")


def print_plan(plan: Plan) -> None:
    m = plan.model
    params = f", {m.parameter_count / 1e6:.1f} M parameters" if m.parameter_count else ""
    rate = f", {m.sample_rate} Hz" if m.sample_rate else ""
    click.echo(f"Model:    {m.family} {m.name} ({m.source}{params}{rate})")
    hw = plan.hardware
    devices = ", ".join(d.id for d in hw.devices) or "none"
    click.echo(
        f"Hardware: {hw.os} {hw.arch}, {hw.cpu_model}, {describe_memory(hw.memory_available_bytes)} RAM free;"
        f" devices: {devices}" + ("" if hw.source == "detected" else f" (from {hw.source})")
    )
    click.echo(f"Device:   {plan.device_lock}" + (" (locked)" if plan.device_lock != "auto" else ""))
    click.echo("")
    if plan.chosen:
        c = plan.chosen
        click.echo(f"Chosen:   {c.label()}  score {c.score:.2f}  ({_estimate(c)})")
        for reason in c.reasons:
            click.echo(f"  - {reason}")
    else:
        click.echo("Chosen:   nothing")
    if plan.alternatives:
        click.echo("Alternatives:")
        for i, p in enumerate(plan.alternatives, start=2):
            _print_entry(f"{i}.", f"{p.label()}  score {p.score:.2f}  ({_estimate(p)})", p.reasons)
    if plan.rejected:
        click.echo("Vetoed:")
        for r in plan.rejected:
            _print_entry("x", f"{r.proposal.label()}  ({_estimate(r.proposal)})", r.reasons)
    if plan.env_changes:
        click.echo("Environment changes:")
        for change in plan.env_changes:
            click.echo(f"  - {change.describe()}")
    for problem in plan.problems:
        click.echo(f"Plugin problem: {problem.plugin}.{problem.hook}: {problem.error}")
    click.echo("")
    click.echo(f"Summary:  {plan.summary}")


def build_plan(obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path]):
    """Settings -> plugins -> plan, or the plan cache's copy when nothing it depends on changed; shared by `plan` and `run`."""
    from .planner import make_plan

    cache_dir, key = _plan_cache_key(obj, model, device, hardware)
    settings = obj.settings(model=model, device=device)
    hit = _cached_plan(cache_dir, key)
    if hit is not None and isinstance(hit.get("plugins"), list):
        from .models import Plan
        from .plugins import PluginHost

        # Only the plugins this plan involves, from their recorded entry points: no scan of every
        # installed distribution, no import of plugins that own nothing here.
        host = PluginHost(settings)
        for name, value, dist, version in hit["plugins"]:
            ep = importlib_metadata().EntryPoint(name=name, value=value, group="ttsfw")
            host.add_entry_point(name, ep.load, dist, version)
        return host, Plan.model_validate_json(hit["plan"])
    host = obj.host(settings)
    plan = make_plan(host, hardware_file=hardware)
    _remember_plan(cache_dir, key, plan, host)
    return host, plan


def importlib_metadata():
    import importlib.metadata

    return importlib.metadata


def _plugins_involved(plan: Plan) -> list[list[Optional[str]]]:
    """[name, entry point, distribution, version] of each plugin owning a proposal or an env change in the plan."""
    involved = {p.plugin for p in plan.ranked()} | {c.plugin for c in plan.env_changes}
    return [[ep.name, ep.value, getattr(ep.dist, "name", None), getattr(ep.dist, "version", None)]
            for ep in importlib_metadata().entry_points(group="ttsfw") if ep.name in involved]


def _plan_cache_key(obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path]):
    """(cache dir, key) of the plan these inputs make; (None, None) when plans are not reused."""
    import os

    from . import plan_cache

    if hardware is not None:
        return None, None
    options = {"model": model, "device": device, "blocked": obj.blocked, "allowed": obj.allowed,
               "strict": obj.strict}
    environ = dict(os.environ)
    key = plan_cache.key(options, environ, cpu_load.snapshot(), Path.cwd())
    return (plan_cache.default_cache_dir(environ), key) if key else (None, None)


def _cached_plan(cache_dir: Optional[Path], key: Optional[str]) -> Optional[dict[str, Any]]:
    from . import plan_cache

    return plan_cache.lookup(cache_dir, key) if cache_dir is not None and key else None


def _remember_plan(cache_dir: Optional[Path], key: Optional[str], plan: Plan, host: Any) -> None:
    """Store a plan worth reusing: something chosen, no GPU (its free memory changes), no plugin problem."""
    import contextlib
    import io

    from . import plan_cache

    if cache_dir is None or not key or plan.chosen is None or plan.problems:
        return
    if any(d.family != "cpu" for d in plan.hardware.devices):
        return
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_plan(plan)
    system = [r.proposal.estimate.peak_memory_bytes for r in plan.rejected
              if r.proposal.memory_pool == "system" and r.proposal.estimate.peak_memory_bytes]
    chosen = plan.chosen
    sources = plan_cache.source_files(
        m.__file__ for name, m in list(sys.modules.items())
        if name.split(".")[0].startswith("ttsfw") and name.count(".") == 0 and getattr(m, "__file__", None)
    )
    plan_cache.store(cache_dir, key, {
        "format": plan_cache.FORMAT, "plan": plan.model_dump_json(), "text": text.getvalue(),
        "sources": sources, "headroom": host.settings.memory_headroom, "plugins": _plugins_involved(plan),
        "needs_bytes": chosen.estimate.peak_memory_bytes if chosen.memory_pool == "system" else 0,
        "vetoed_needs_bytes": min(system) if system else None,
    })


@main.command("plan")
@click.option("--model", "-m", default=None, help="Model path (default: the embedded voice).")
@click.option("--device", "-d", default=None, help="auto, cpu, cuda or mps: a hard constraint.")
@click.option("--hardware", type=click.Path(path_type=Path), default=None, help="Plan for a saved profile.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_obj
def plan_cmd(
    obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path], as_json: bool
) -> None:
    """Show how the model would run here, and why."""
    hit = _cached_plan(*_plan_cache_key(obj, model, device, hardware))
    if hit is not None:  # nothing the plan depends on changed: no settings, plugins or models to load
        if as_json:
            click.echo(json.dumps(json.loads(hit["plan"]), indent=2))
        else:
            click.echo(hit["text"], nl=False)
            click.echo(f"(plan cache: made {hit.get('made_at', '?')} from the same inputs and CPU load class; "
                       "free memory rechecked)")
        return
    _, plan = build_plan(obj, model, device, hardware)
    if as_json:
        _emit_json(plan.model_dump(mode="json"))
    else:
        print_plan(plan)
    if plan.chosen is None:
        sys.exit(3)


# -- run ---------------------------------------------------------------------


def _default_output(file: Optional[str]) -> Path:
    if file and file != "-":
        return Path(Path(file).stem + ".wav")
    return Path("speech.wav")


def _voice_options(engine: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Hand the voice options the user gave to the engine; one that does not apply is a one-line error."""
    import inspect

    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return {}
    configure = getattr(engine, "configure", None)
    params = inspect.signature(configure).parameters if configure is not None else {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    foreign = [k for k in given if not takes_any and k not in params]
    if configure is None or foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in (foreign or given))
        raise UsageError(f"{flags} does not apply to the {engine.backend} engine")
    configure(**given)
    return given


def _summary(out: str, loaded: Any, metrics: Any) -> list[str]:
    from .hardware import describe_memory as mem

    rtf = f"RTF {metrics.rtf:.3f}" if metrics.rtf is not None else "RTF n/a"
    first = metrics.time_to_first_audio_seconds
    lines = [
        f"wrote {out}: {metrics.audio_seconds:.2f} s of audio ({metrics.chunks} sentence"
        f"{'s' if metrics.chunks != 1 else ''}, {metrics.sample_rate} Hz)",
        f"  with {loaded.proposal.label()} (score {loaded.proposal.score:.2f})"
        + (f", after falling back from {len(loaded.attempts) - 1} proposal(s)" if loaded.fell_back else ""),
        f"  {rtf} (synthesis {metrics.synthesis_seconds:.2f} s), first audio after {first:.2f} s"
        f" (engine load {metrics.load_seconds:.2f} s), peak RSS {mem(metrics.peak_rss_bytes)}",
    ]
    if metrics.tokens_per_s is not None:
        lines.append(f"  {metrics.tokens} semantic tokens, {metrics.tokens_per_s:.1f} tokens/s")
    gpu = metrics.engine
    if "gpu_util_mean_percent" in gpu:
        lines.append(
            f"  GPU {gpu['gpu_util_mean_percent']:.0f}% busy on average (max {gpu.get('gpu_util_max_percent', 0):.0f}%)"
            f" during synthesis, peak GPU memory {mem(gpu.get('gpu_mem_used_peak_bytes'))}"
        )
    return lines


@main.command("run")
@click.argument("text", required=False)
@click.option("-f", "--file", "file", default=None, metavar="FILE", help="Read the text from FILE (- for stdin).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="WAV file to write (default: speech.wav, or FILE's name with .wav).")
@click.option("--model", "-m", default=None,
              help="Piper voice (.onnx with its .onnx.json) or Fish Speech checkpoint directory; "
                   "default: the embedded voice.")
@click.option("--device", "-d", default=None, help="auto, cpu, cuda or mps: a hard constraint.")
@click.option("--speaker", default=None, help="Speaker id or name (multi-speaker Piper voices).")
@click.option("--reference-audio", type=click.Path(path_type=Path), default=None,
              help="Fish Speech: a 5-10 s clip of the voice to clone.")
@click.option("--reference-text", default=None, help="Fish Speech: what the reference clip says.")
@click.option("--seed", type=int, default=None, help="Fish Speech: sampling seed, for repeatable output.")
@click.option("--length-scale", type=float, default=None, help="Phoneme length: > 1 slower speech, < 1 faster.")
@click.option("--noise-scale", type=float, default=None, help="Generator noise (voice's default if unset).")
@click.option("--noise-w-scale", type=float, default=None, help="Phoneme width noise (voice's default if unset).")
@click.option("--sentence-silence", type=float, default=None, help="Seconds of silence between sentences.")
@click.option("--stream", is_flag=True, help="Write WAV audio to stdout as each sentence is ready.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the metrics as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
@click.option("--max-chars", type=click.IntRange(min=1), default=None,
              help="Longest input accepted (default 500,000 characters).")
@click.pass_obj
def run_cmd(
    obj: Context, text: Optional[str], file: Optional[str], output: Optional[Path], model: Optional[str],
    device: Optional[str], speaker: Optional[str], reference_audio: Optional[Path], reference_text: Optional[str],
    seed: Optional[int], length_scale: Optional[float], noise_scale: Optional[float],
    noise_w_scale: Optional[float], sentence_silence: Optional[float], stream: bool, as_json: bool, quiet: bool,
    max_chars: Optional[int],
) -> None:
    """Speak TEXT (or -f FILE, or - for stdin) into a WAV file."""
    import time

    from . import runtime
    from .audio_io import AtomicWavWriter, StreamWavWriter, check_output_path
    from .errors import NoFeasiblePlan
    from .synthesis import synthesize
    from .text import DEFAULT_MAX_CHARS, read_input, split_sentences

    started = time.perf_counter()
    # Everything the user can get wrong is checked before the engine is loaded.
    spoken = read_input(text, file, max_chars or DEFAULT_MAX_CHARS)
    if stream and output is not None:
        raise UsageError("--stream writes to stdout; drop -o, or drop --stream to write a file")
    if stream and sys.stdout.isatty():
        raise UsageError("--stream writes binary WAV audio to stdout: pipe it (ttsfw run --stream ... | aplay) or use -o")
    out_path = None if stream else check_output_path(output or _default_output(file))
    if reference_audio is not None and not reference_audio.is_file():
        raise UsageError(f"reference audio not found: {reference_audio}")
    if reference_text is not None and reference_audio is None:
        raise UsageError("--reference-text needs --reference-audio (the clip it transcribes)")
    info = sys.stderr if stream else sys.stdout  # keep stdout clean for the audio stream

    host, plan = build_plan(obj, model, device, None)
    if plan.chosen is None:
        raise NoFeasiblePlan(plan.summary)
    t_load = time.perf_counter()
    loaded = runtime.load(host, plan)
    load_seconds = time.perf_counter() - t_load
    engine = loaded.engine
    try:
        voice = _voice_options(engine, {
            "speaker": speaker, "length_scale": length_scale, "noise_scale": noise_scale,
            "noise_w_scale": noise_w_scale, "sentence_silence": sentence_silence,
            "reference_audio": reference_audio, "reference_text": reference_text, "seed": seed,
        })
        chunks = split_sentences(spoken, loaded.proposal.chunk_chars)
        pauses = None
        if stream and sentence_silence is None:  # a cut within a sentence must not get sentence silence
            from .first_clause import SEAM_PAD_SECONDS, split_first_clause

            chunks, cut = split_first_clause(chunks)
            pauses = {0: SEAM_PAD_SECONDS * (length_scale or 1.0)} if cut else None
        show_bar = not quiet and not as_json and sys.stderr.isatty() and len(chunks) > 2
        writer = StreamWavWriter(sys.stdout.buffer, engine.sample_rate) if stream else AtomicWavWriter(
            out_path, engine.sample_rate  # type: ignore[arg-type]
        )
        with writer:
            if show_bar:
                with click.progressbar(length=len(spoken), label="speaking", file=sys.stderr,
                                       show_eta=True, show_percent=True) as bar:
                    metrics = synthesize(engine, chunks, writer, started=started, pauses=pauses,
                                         on_chunk=lambda chunk: bar.update(len(chunk) + 1))
            else:
                metrics = synthesize(engine, chunks, writer, started=started, pauses=pauses)
    finally:
        engine.close()
    metrics.load_seconds = load_seconds
    if pauses:
        metrics.chunks -= 1  # the summary counts sentences: the clause cut made one sentence two chunks
    target = "stdout" if stream else str(out_path)
    if as_json:
        data = {
            "output": target,
            "chosen": loaded.proposal.label(),
            "attempts": [{"proposal": a.proposal.label(), "ok": a.ok, "reason": a.reason} for a in loaded.attempts],
            "env_applied": [c.describe() for c in loaded.env_applied],
            "voice": voice,
            "metrics": metrics.as_dict(),
            "plan": plan.model_dump(mode="json"),
        }
        click.echo(json.dumps(data, indent=2, default=str), file=info)
    elif not quiet:
        for line in _summary(target, loaded, metrics):
            click.echo(line, file=info)


# -- tune --------------------------------------------------------------------


@main.command("tune")
@click.option("--model", "-m", default=None, help="Model path (default: the embedded voice).")
@click.option("--device", "-d", default=None, help="auto, cpu, cuda or mps: a hard constraint.")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Round-robin rounds: each loads every proposal afresh and times a short sentence and a paragraph.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@click.pass_obj
def tune_cmd(obj: Context, model: Optional[str], device: Optional[str], rounds: int, as_json: bool) -> None:
    """Measure every feasible proposal here against the current choice and cache what wins."""
    import importlib.metadata
    import time

    from . import tune_rounds, tune_run, tuning
    from .cpu_load import without_load
    from .engines import engine_info
    from .errors import NoFeasiblePlan
    from .planner import make_plan

    host, plan = build_plan(obj, model, device, None)
    # Measure the machine as built: the plan a run makes fits threads to the load it sees then.
    quiet = plan.hardware.model_copy(update={"flags": without_load(plan.hardware.flags)})
    plan = make_plan(host, model=plan.model, hardware=quiet)
    if plan.chosen is None:
        raise NoFeasiblePlan(plan.summary)
    dists = importlib.metadata.packages_distributions()

    def versions(p: Proposal) -> dict[str, str]:
        info = engine_info(p.engine)
        return tuning.module_versions(sorted({d for m in (info.requires if info else ()) for d in dists.get(m, [])}))

    proposals = {tuning.proposal_key(p): p for p in plan.ranked()}
    control = tuning.proposal_key(plan.chosen)
    measure = tune_run.engine_measurer(host, plan, proposals)
    decision = tune_rounds.tune(list(proposals), control, measure, rounds, list(tune_run.WORKLOADS))
    entries, summary = tune_run.cache_entries(decision, proposals, versions, time.strftime("%Y-%m-%d %H:%M"))
    path = tuning.save(host.settings.cache_dir, plan.hardware, plan.model, entries, summary) if entries else None
    new_plan = make_plan(host, model=plan.model, hardware=plan.hardware)
    failed = {proposals[k].label(): why for k, why in decision.failed.items()}
    if as_json:
        _emit_json({"measurements": entries, "failed": failed, "cache": str(path) if path else None,
                    "decision": summary, "chosen": new_plan.chosen.label() if new_plan.chosen else None})
        return
    _print_tune(entries, failed, decision)
    if path:
        click.echo(f"saved to {path}")
    click.echo(f"now chosen: {new_plan.chosen.label() if new_plan.chosen else 'nothing'}")


def _print_tune(entries: dict[str, dict[str, Any]], failed: dict[str, str], decision: Any) -> None:
    click.echo(f"{decision.rounds} round-robin rounds; end-to-end seconds (session start + speaking), medians")
    click.echo(f"{'start s':>7}  {'short s':>7}  {'para s':>6}  {'RTF':>6}  proposal")
    for key, e in sorted(entries.items(), key=lambda kv: sum(kv[1]["end_to_end_seconds"].values())):
        mark = "  <- chosen" if key == decision.winner else ("  (control)" if key == decision.control else "")
        short, para = e["end_to_end_seconds"].values()
        click.echo(f"{e['load_seconds']:7.2f}  {short:7.2f}  {para:6.2f}  {e['rtf']:6.3f}  {e['label']}{mark}")
    for label, why in failed.items():
        click.echo(f"  failed  {label}: {why}")
    click.echo(f"decision: {decision.reason}")


def _exit_without_teardown() -> None:
    """End a successful run that loaded an engine without the interpreter's teardown.

    Finalising onnxruntime, numpy or torch modules takes ~150 ms, longer than
    synthesizing a short sentence. Everything ttsfw writes is closed by now
    (the WAV was moved into place, caches were written atomically), so only
    the standard streams need flushing.
    """
    if not any(name in sys.modules for name in ("onnxruntime", "torch")):
        return
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run() -> None:
    """Console entry point: turn every expected failure into one line and an exit code."""
    try:
        main.main(standalone_mode=False)
        _exit_without_teardown()
    except TtsfwError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)

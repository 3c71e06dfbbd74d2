"""The ``voxfit`` command line.

Every failure the user can cause ends as one ``error: ...`` line on stderr
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from voxfit.planning import cpu_load

cpu_load.mark()  # the CPU-load window starts with the process: the plan reads it later without waiting

import click  # noqa: E402

from voxfit import __version__  # noqa: E402
from voxfit.errors import UsageError, VoxfitError  # noqa: E402
from voxfit.util.signals import Terminated, terminate_on_signals  # noqa: E402
from voxfit.util.stdio import guard_stdout, settle_stdout  # noqa: E402

# pydantic models and settings are imported where they are used: `voxfit plan` printing a
# remembered plan needs neither (see voxfit.planning.reuse).
if TYPE_CHECKING:
    from voxfit.models import HardwareProfile, Plan
    from voxfit.settings import Settings


def describe_memory(n: Optional[int]) -> str:
    from voxfit.planning.hardware import describe_memory as describe

    return describe(n)


class Context:
    """What the group options decided, handed to every subcommand."""

    def __init__(self, blocked: list[str], allowed: list[str], strict: Optional[bool]) -> None:
        self.blocked, self.allowed, self.strict = blocked, allowed, strict

    def settings(self, **overrides: Any) -> Settings:
        from voxfit.settings import load_settings

        base = load_settings(strict=self.strict, **overrides)
        update: dict[str, Any] = {}
        if self.blocked:
            update["block_plugins"] = sorted(set(base.block_plugins) | set(self.blocked))
        if self.allowed:
            update["allow_plugins"] = sorted(set(base.allow_plugins or []) | set(self.allowed))
        return base.model_copy(update=update) if update else base

    def request(self, model: Optional[str], device: Optional[str], hardware: Optional[Path] = None,
                cpu_budget: Optional[int] = None, no_cache: bool = False):  # -> PlanRequest
        from voxfit.planning.reuse import PlanRequest

        return PlanRequest(model=model, device=device, hardware=hardware, blocked=self.blocked,
                           allowed=self.allowed, strict=self.strict, cpu_budget=cpu_budget, no_cache=no_cache)

    def host(self, settings: Settings):  # -> PluginHost
        from voxfit.plugins import PluginHost

        return PluginHost.from_entry_points(settings)


def _parse_plugin_options(values: tuple[str, ...]) -> list[str]:
    blocked = []
    for value in values:
        if not value.startswith("no:") or not value[3:]:
            raise UsageError(f"-p expects no:NAME to block a plugin, got {value!r}")
        blocked.append(value[3:])
    return blocked


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="voxfit")
@click.option("-p", "plugin_options", multiple=True, metavar="no:NAME", help="Block a plugin by name (repeatable).")
@click.option("--allow-plugin", "allowed", multiple=True, metavar="NAME", help="Load only these plugins (repeatable).")
@click.option("--strict/--no-strict", default=None, help="Turn plugin failures into errors (VOXFIT_STRICT).")
@click.pass_context
def main(ctx: click.Context, plugin_options: tuple[str, ...], allowed: tuple[str, ...], strict: Optional[bool]) -> None:
    """Hardware-aware runtime for neural text-to-speech."""
    ctx.obj = Context(_parse_plugin_options(plugin_options), list(allowed), strict)


NO_CACHE = click.option(
    "--no-cache", is_flag=True,
    help="Plan afresh and remember nothing (VOXFIT_PLAN_CACHE=false does the same for every command).")


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
        click.echo("no plugins installed (pip install 'voxfit[all]')")
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


@main.command("engines")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def engines_cmd(obj: Context, as_json: bool) -> None:
    """List the engines the plugins registered, the model families they run and their voice options."""
    from voxfit.options import describe

    host = obj.host(obj.settings())
    registry = host.registry
    rows = []
    for info in sorted(registry.engines.values(), key=lambda e: e.backend):
        options = registry.options_for(info.backend)
        rows.append({
            "engine": info.backend, "plugin": info.plugin, "families": sorted(info.families),
            "requires": list(info.requires), "options": list(options.model_fields) if options else [],
            "description": info.description,
        })
    if as_json:
        _emit_json({"engines": rows, "device_families": sorted(registry.families)})
        return
    for row, info in zip(rows, sorted(registry.engines.values(), key=lambda e: e.backend), strict=True):
        click.echo(f"{row['engine']}  (plugin {row['plugin']}; runs {', '.join(row['families'])} models)")
        click.echo(f"    {row['description']}")
        click.echo(f"    options: {describe(registry.options_for(info.backend))}")
    click.echo("device families: " + ", ".join(sorted(registry.families)))
    for problem in host.problems:
        click.echo(f"plugin problem: {problem.plugin}.{problem.hook}: {problem.error}", err=True)


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
    from voxfit.planning.planner import detect

    host = obj.host(obj.settings())
    profile = detect(host)
    if as_json:
        _emit_json(profile.model_dump(mode="json"))
        return
    _print_hardware(profile)
    for problem in host.problems:
        click.echo(f"plugin problem: {problem.plugin}.{problem.hook}: {problem.error}", err=True)


# -- plan --------------------------------------------------------------------


def print_plan(plan: Plan) -> None:
    from voxfit.planning.explain import plan_lines

    for line in plan_lines(plan):
        click.echo(line)


def build_plan(obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path],
               cpu_budget: Optional[int] = None, no_cache: bool = False, found: Any = None):  # -> Planned
    """Settings -> plugins -> plan, or the remembered plan when nothing it depends on changed; shared by `plan`,
    `run`, `tune` and `cluster` (which passes each replica's share of a node as ``cpu_budget``)."""
    from voxfit.planning.reuse import plan

    settings = obj.settings(model=model, device=device, cpu_budget=cpu_budget)
    return plan(obj.request(model, device, hardware, cpu_budget, no_cache or not settings.plan_cache), settings,
                found)


@main.command("plan")
@click.option("--model", "-m", default=None, help="Model path (default: the embedded voice).")
@click.option("--device", "-d", default=None, help="auto or a device family an installed plugin registers.")
@click.option("--hardware", type=click.Path(path_type=Path), default=None, help="Plan for a saved profile.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@NO_CACHE
@click.pass_obj
def plan_cmd(obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path], as_json: bool,
             no_cache: bool) -> None:
    """Show how the model would run here, and why."""
    from voxfit.planning.reuse import remembered

    found = remembered(obj.request(model, device, hardware, no_cache=no_cache))
    if found.entry is not None:  # nothing the plan depends on changed: no settings, plugins or models to load
        if as_json:
            _emit_json({**json.loads(found.entry["plan"]), "plan_cache": found.decision.as_dict()})
        else:
            click.echo(found.entry["text"], nl=False)
            click.echo(f"(plan cache: {found.decision.reason})")
        return
    planned = build_plan(obj, model, device, hardware, no_cache=no_cache, found=found)
    planned.remember()
    if as_json:
        _emit_json({**planned.plan.model_dump(mode="json"), "plan_cache": planned.cache.as_dict()})
    else:
        print_plan(planned.plan)
    if planned.plan.chosen is None:
        sys.exit(3)


# -- cluster -----------------------------------------------------------------


@main.command("cluster")
@click.argument("profiles", nargs=-1, required=True, metavar="PROFILE[*N]...")
@click.option("--model", "-m", default=None, help="Model path (default: the embedded voice).")
@click.option("--replicas-per-node", "replicas", type=int, default=1, show_default=True,
              help="Replicas sharing each node; each plans with its share of the node's CPUs.")
@click.option("--json", "as_json", is_flag=True, help="Print the simulation as JSON.")
@click.pass_obj
def cluster_cmd(obj: Context, profiles: tuple[str, ...], model: Optional[str], replicas: int, as_json: bool) -> None:
    """Size a cluster of saved hardware profiles (PROFILE*N: N such nodes): each node type's plan, each
    replica's resource request and the capacity they add up to."""
    from voxfit.cluster import simulate as cluster_sim
    from voxfit.planning.hardware import load_profile

    nodes = cluster_sim.parse_nodes(profiles)

    def plan_for(path: Path, cpu_budget: Optional[int]):
        planned = build_plan(obj, model, None, path, cpu_budget)  # exactly `voxfit plan --hardware PATH`
        return planned.plan, planned.host.registry.families

    cluster_sim.simulate(nodes, plan_for, load_profile, replicas)
    if as_json:
        _emit_json(cluster_sim.as_dict(nodes, replicas))
        return
    for line in cluster_sim.lines(nodes, replicas):
        click.echo(line)


# -- run ---------------------------------------------------------------------

def _default_output(file: Optional[str]) -> Path:
    if file and file != "-":
        return Path(Path(file).stem + ".wav")
    return Path("speech.wav")


# Friendly flags for common voice options; each is also reachable as -O NAME=VALUE,
# and both go through one channel: the chosen engine's registered options model.
VOICE_FLAGS = (
    "speaker", "length_scale", "noise_scale", "noise_w_scale", "sentence_silence",
    "reference_audio", "reference_text", "seed",
)


def _voice_options(flags: dict[str, Any], assignments: tuple[str, ...]) -> dict[str, Any]:
    from voxfit.options import parse_assignments

    given = {k: v for k, v in flags.items() if v is not None}
    for key, value in parse_assignments(assignments).items():
        if key in given:
            raise UsageError(f"--{key.replace('_', '-')} and -O {key}=... both given: keep one")
        given[key] = value
    return given


def _summary(out: str, report: Any) -> list[str]:
    from voxfit.planning.hardware import describe_memory as mem

    metrics = report.metrics
    rtf = f"RTF {metrics.rtf:.3f}" if metrics.rtf is not None else "RTF n/a"
    first = metrics.time_to_first_audio_seconds
    lines = [
        f"wrote {out}: {metrics.audio_seconds:.2f} s of audio ({metrics.chunks} sentence"
        f"{'s' if metrics.chunks != 1 else ''}, {metrics.sample_rate} Hz)",
        *("  " + line if not line.startswith(" ") else line for line in report.lines()),
        f"  {rtf} (synthesis {metrics.synthesis_seconds:.2f} s), first audio after {first:.2f} s"
        f" (engine load {report.load_seconds:.2f} s), peak RSS {mem(metrics.peak_rss_bytes)}",
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
              help="Model to speak with, in any format an installed plugin reads (a Piper voice .onnx, "
                   "a Fish Speech checkpoint directory, ...); default: the default voice.")
@click.option("--device", "-d", default=None, help="auto or a device family (cpu, cuda, mps, ...): a hard constraint.")
@click.option("-O", "--option", "assignments", multiple=True, metavar="KEY=VALUE",
              help="A voice option of the chosen engine (repeatable); `voxfit engines` lists them.")
@click.option("--speaker", default=None, help="Speaker id or name (multi-speaker voices).")
@click.option("--reference-audio", type=click.Path(path_type=Path), default=None,
              help="Fish Speech: a 5-10 s clip of the voice to clone.")
@click.option("--reference-text", default=None, help="Fish Speech: what the reference clip says.")
@click.option("--seed", default=None, help="Fish Speech: sampling seed (-2**63 to 2**64-1), for repeatable output.")
@click.option("--length-scale", type=float, default=None, help="Phoneme length: > 1 slower speech, < 1 faster.")
@click.option("--noise-scale", type=float, default=None, help="Generator noise (voice's default if unset).")
@click.option("--noise-w-scale", type=float, default=None, help="Phoneme width noise (voice's default if unset).")
@click.option("--sentence-silence", type=float, default=None, help="Seconds of silence between sentences.")
@click.option("--stream", is_flag=True, help="Write WAV audio to stdout as each sentence is ready.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan, the report and the metrics as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
@click.option("--max-chars", type=click.IntRange(min=1), default=None,
              help="Longest input accepted (default 500,000 characters).")
@NO_CACHE
@click.pass_obj
def run_cmd(
    obj: Context, text: Optional[str], file: Optional[str], output: Optional[Path], model: Optional[str],
    device: Optional[str], assignments: tuple[str, ...], stream: bool, as_json: bool, quiet: bool,
    max_chars: Optional[int], no_cache: bool, **voice_flags: Any,
) -> None:
    """Speak TEXT (or -f FILE, or - for stdin) into a WAV file."""
    import time

    from voxfit.speaking.audio_io import StreamWavWriter, check_not_input, check_output_path, open_wav_output
    from voxfit.speaking.session import Session
    from voxfit.speaking.synthesis import Metrics
    from voxfit.speaking.text import DEFAULT_MAX_CHARS, read_input

    started = time.perf_counter()
    # Everything the user can get wrong is checked before the engine is loaded.
    spoken = read_input(text, file, max_chars or DEFAULT_MAX_CHARS)
    if stream and output is not None:
        raise UsageError("--stream writes to stdout; drop -o, or drop --stream to write a file")
    if stream and sys.stdout.isatty():
        raise UsageError("--stream writes binary WAV audio to stdout: pipe it (voxfit run --stream ... | aplay) or use -o")
    out_path = None if stream else check_output_path(output or _default_output(file))
    if out_path is not None:
        check_not_input(out_path, "-" if text == "-" else file)
    reference_audio = voice_flags.get("reference_audio")
    if reference_audio is not None and not reference_audio.is_file():
        raise UsageError(f"reference audio not found: {reference_audio}")
    if voice_flags.get("reference_text") is not None and reference_audio is None:
        raise UsageError("--reference-text needs --reference-audio (the clip it transcribes)")
    options = _voice_options(voice_flags, assignments)
    info = sys.stderr if stream else sys.stdout  # keep stdout clean for the audio stream

    planned = build_plan(obj, model, device, None, no_cache=no_cache)  # the remembered plan when nothing changed
    session = Session(settings=planned.host.settings, host=planned.host, plan=planned.plan, options=options,
                      started=started)
    try:
        chunks = session.chunks(spoken)
        show_bar = not quiet and not as_json and sys.stderr.isatty() and len(chunks) > 2
        writer = StreamWavWriter(sys.stdout.buffer, session.sample_rate) if stream else open_wav_output(
            out_path, session.sample_rate  # type: ignore[arg-type]
        )
        metrics = Metrics()
        with writer:
            if show_bar:
                with click.progressbar(length=len(spoken), label="speaking", file=sys.stderr,
                                       show_eta=True, show_percent=True) as bar:
                    for audio in session.stream(spoken, metrics=metrics, started=started, clause_first=stream,
                                                on_chunk=lambda chunk: bar.update(len(chunk) + 1)):
                        writer.write(audio.pcm)
            else:
                # Streaming: a listener hears the first clause while the rest is made.
                for audio in session.stream(spoken, metrics=metrics, started=started, clause_first=stream):
                    writer.write(audio.pcm)
    finally:
        session.close()
    planned.remember()  # only now: a run that failed leaves no plan behind for the next
    report = session.report(metrics)
    target = "stdout" if stream else str(out_path)
    if as_json:
        data = {"output": target, **report.as_dict(), "plan": session.plan.model_dump(mode="json"),
                "plan_cache": planned.cache.as_dict()}
        click.echo(json.dumps(data, indent=2, default=str), file=info)
    elif not quiet:
        for line in _summary(target, report):
            click.echo(line, file=info)


# -- tune --------------------------------------------------------------------


@main.command("tune")
@click.option("--model", "-m", default=None, help="Model path (default: the default voice).")
@click.option("--device", "-d", default=None, help="auto or a device family: a hard constraint.")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Round-robin rounds: each loads every proposal afresh and times a short sentence and a paragraph.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@click.pass_obj
def tune_cmd(obj: Context, model: Optional[str], device: Optional[str], rounds: int, as_json: bool) -> None:
    """Measure every feasible proposal here against the current choice and cache what wins."""
    from voxfit.errors import NoFeasiblePlan
    from voxfit.tuning.tune import tune_plan

    planned = build_plan(obj, model, device, None, no_cache=True)  # tuning measures what is here now
    if planned.plan.chosen is None:
        raise NoFeasiblePlan(planned.plan.summary)
    result = tune_plan(planned.host, planned.plan, rounds=rounds)
    chosen = result.plan.chosen.label() if result.plan and result.plan.chosen else None
    if as_json:
        _emit_json({"measurements": result.entries, "failed": result.failed,
                    "cache": str(result.path) if result.path else None, "not_saved": result.not_saved,
                    "decision": result.summary, "chosen": chosen})
    else:
        _print_tune(result.entries, result.failed, result.decision)
        if result.path:
            click.echo(f"saved to {result.path}")
        if result.plan is not None:
            click.echo(f"now chosen: {chosen or 'nothing'}")
    # Measurements that cannot be cached are still worth showing: printed above, then the failure.
    if result.not_saved:
        raise UsageError(result.not_saved)


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


# -- serve -------------------------------------------------------------------


@main.command("serve")
@click.option("--model", "-m", "models", multiple=True,
              help="A model to offer as a voice (repeatable; VOXFIT_MODELS; default: VOXFIT_MODEL or the default voice).")
@click.option("--device", "-d", default=None, help="auto or a device family: a hard constraint (VOXFIT_DEVICE).")
@click.option("--host", default=None, help="Address to listen on (VOXFIT_HOST; default 127.0.0.1, loopback only).")
@click.option("--port", type=int, default=None, help="Port (VOXFIT_PORT; default 8000; 0 picks a free one).")
@click.option("--workers-per-engine", type=int, default=None,
              help="Engines loaded per voice; each runs one request at a time, or several if it speaks "
                   "concurrently, as the Piper engine does (VOXFIT_WORKERS_PER_ENGINE; default 1).")
@click.option("--max-queue", type=int, default=None,
              help="Requests that may wait per voice; more get 503 + Retry-After (VOXFIT_MAX_QUEUE; default 8).")
@click.option("--request-timeout", type=float, default=None,
              help="Seconds a request may take, queue included (VOXFIT_REQUEST_TIMEOUT; default 120).")
@click.option("--drain-timeout", type=float, default=None,
              help="Seconds in-flight requests get after SIGTERM (VOXFIT_DRAIN_TIMEOUT; default 30).")
@click.option("--api-key", default=None,
              help="Require Authorization: Bearer KEY on every route but /health (prefer VOXFIT_API_KEY: "
                   "arguments show in ps).")
@click.option("--metrics-log", type=click.Path(path_type=Path), default=None,
              help="Append one JSON line per request to this file (VOXFIT_METRICS_LOG).")
@click.option("--max-input-chars", type=int, default=None,
              help="Longest text per request (VOXFIT_MAX_INPUT_CHARS; default 4096, as OpenAI's).")
@click.option("--voice-alias", "aliases", multiple=True, metavar="ALIAS=VOICE",
              help="Another name for a voice, e.g. alloy=en_US-joe-medium (repeatable; VOXFIT_VOICE_ALIASES).")
@click.option("--wyoming", default=None, metavar="tcp://HOST:PORT",
              help="Also serve the Wyoming protocol for Home Assistant, e.g. tcp://127.0.0.1:10200 (VOXFIT_WYOMING).")
@click.option("--http/--no-http", "http", default=None,
              help="Serve HTTP (default); --no-http with --wyoming serves Wyoming alone (VOXFIT_HTTP).")
@click.option("--ray/--no-ray", "ray", default=None,
              help="Serve on Ray Serve: each replica plans on its node (VOXFIT_RAY; README, \"Scaling out\").")
@click.option("--ray-address", default=None,
              help="Ray cluster to join (VOXFIT_RAY_ADDRESS; default RAY_ADDRESS, else a new local cluster).")
@click.option("--replicas", type=int, default=None, help="With --ray: replicas per node (VOXFIT_REPLICAS; default 1).")
@click.option("--autoscale", default=None, metavar="MIN:MAX",
              help="With --ray: MIN to MAX replicas per node, scaled on queue length (VOXFIT_AUTOSCALE).")
@click.pass_obj
def serve_cmd(obj: Context, models: tuple[str, ...], aliases: tuple[str, ...], **flags: Any) -> None:
    """Serve speech over HTTP (an OpenAI-compatible API, voxfit's own route, a page at /) and Wyoming."""
    try:
        from voxfit.server.run import serve
    except ImportError as exc:
        raise UsageError(f"voxfit serve needs the serve extra ({exc.name} is missing): "
                         "pip install 'voxfit[serve]'") from None
    settings = obj.settings(models=list(models) or None, voice_aliases=list(aliases) or None, **flags)

    def show_plan(name: str, plan: Plan) -> None:
        click.echo(f"== voice {name}")
        print_plan(plan)
        click.echo("")

    def echo(line: str) -> None:
        click.echo(line, err=True)

    if settings.ray:
        _serve_on_ray(settings, echo)
        return
    serve(settings, obj.host, echo=echo, show_plan=show_plan, ready=lambda line: click.echo(line))


def _serve_on_ray(settings: Settings, echo: Any) -> None:
    try:
        from voxfit.server.ray_serve import serve_on_ray
    except ImportError as exc:
        raise UsageError(f"voxfit serve --ray needs the ray extra ({exc.name} is missing): "
                         "pip install 'voxfit[ray]'") from None

    def show_class(node_class: Any) -> None:
        for line in node_class.describe():
            click.echo(line)
        click.echo("")

    serve_on_ray(settings, echo=echo, show_class=show_class, ready=lambda line: click.echo(line))


def _exit_without_teardown() -> None:
    """End a successful run that loaded an engine without the interpreter's teardown.

    Finalising onnxruntime, numpy or torch modules takes ~150 ms, longer than
    synthesizing a short sentence. Everything voxfit writes is closed by now
    (the WAV was moved into place, caches were written atomically), so only
    the standard streams need flushing.
    """
    if not any(name in sys.modules for name in ("onnxruntime", "torch")):
        return
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _fail(line: str, exit_code: int) -> None:
    # One line, whatever the message quotes: a newline a user put in a path or a value is shown, not obeyed.
    click.echo(line.replace("\r", "\\r").replace("\n", "\\n"), err=True)
    settle_stdout()
    sys.exit(exit_code)


def run() -> None:
    """Console entry point: turn every expected failure into one line and an exit code.

    SIGTERM and SIGHUP unwind like Ctrl-C (:mod:`voxfit.util.signals`), so temporary
    files are removed on the way out; each ends in one line and 128 + signum.
    """
    guard_stdout()
    try:
        with terminate_on_signals():
            main.main(standalone_mode=False)
            sys.stdout.flush()  # a full disk behind `>` fails here, not in the interpreter's teardown
            _exit_without_teardown()
    except VoxfitError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except Terminated as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("error: interrupted", 130)
    except click.ClickException as exc:
        _fail(f"error: {exc.format_message()}", exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        settle_stdout()  # the reader left (`| head`): nothing to say
        sys.exit(1)

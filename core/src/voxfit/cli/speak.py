"""``voxfit run``: speak a text into a WAV file (or a stream), with the plan's choice and a report of it.

Voice options are the chosen engine's: ``voxfit run`` has a ``--NAME VALUE``
flag for every option an installed engine registers (built from the engines'
options models when the command parses or shows its help), and ``-O
NAME=VALUE`` reaches the same options; both go through one channel, the
chosen engine's options model, before anything is loaded.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click

from voxfit.cli.group import NO_CACHE, Context, build_plan, describe_memory, device_option, main
from voxfit.cli.plan import MODEL_HELP
from voxfit.errors import UsageError

_VOICE_KEY = "voxfit_voice_options"


class VoiceOptionsCommand(click.Command):
    """A command with one ``--NAME`` flag per voice option of the installed engines."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        own = super().get_params(ctx)
        if _VOICE_KEY not in ctx.meta:
            ctx.meta[_VOICE_KEY] = _voice_params(ctx, {p.name for p in own} | {"help"})
        return [*own, *ctx.meta[_VOICE_KEY]]


def _voice_params(ctx: click.Context, taken: set[Optional[str]]) -> list[click.Option]:
    """A flag for each option name the engines register (an option named like one of the command's own is
    reachable with -O only)."""
    from voxfit.options import option_docs

    obj = ctx.find_object(Context)
    if obj is None:
        return []
    registry = obj.registry()
    docs: dict[str, tuple[Any, list[str]]] = {}
    for backend in sorted(registry.engines):
        for doc in option_docs(registry.options_for(backend)):
            docs.setdefault(doc.name, (doc, []))[1].append(backend)
    return [click.Option([f"--{name.replace('_', '-')}", name], default=None,
                         metavar=doc.type.upper() if " " not in doc.type else "VALUE",
                         help=f"[{', '.join(engines)}] {doc.line().split('  ', 1)[1]}")
            for name, (doc, engines) in sorted(docs.items()) if name not in taken]


def _default_output(file: Optional[str]) -> Path:
    if file and file != "-":
        return Path(Path(file).stem + ".wav")
    return Path("speech.wav")


def _voice_options(flags: dict[str, Any], assignments: tuple[str, ...]) -> dict[str, Any]:
    from voxfit.options import parse_assignments

    given = {k: v for k, v in flags.items() if v is not None}
    for key, value in parse_assignments(assignments).items():
        if key in given:
            raise UsageError(f"--{key.replace('_', '-')} and -O {key}=... both given: keep one")
        given[key] = value
    return given


def _output(text: Optional[str], file: Optional[str], output: Optional[Path], stream: bool) -> Optional[Path]:
    """Where the audio goes (None: stdout), checked before anything is loaded."""
    from voxfit.speaking.audio_io import check_not_input, check_output_path

    if stream and output is not None:
        raise UsageError("--stream writes to stdout; drop -o, or drop --stream to write a file")
    if stream and sys.stdout.isatty():
        raise UsageError("--stream writes binary WAV audio to stdout: pipe it (voxfit run --stream ... | aplay) or use -o")
    if stream:
        return None
    path = check_output_path(output or _default_output(file))
    check_not_input(path, "-" if text == "-" else file)
    return path


@main.command("run", cls=VoiceOptionsCommand)
@click.argument("text", required=False)
@click.option("-f", "--file", "file", default=None, metavar="FILE", help="Read the text from FILE (- for stdin).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="WAV file to write (default: speech.wav, or FILE's name with .wav).")
@click.option("--model", "-m", default=None, help=MODEL_HELP)
@device_option()
@click.option("-O", "--option", "assignments", multiple=True, metavar="NAME=VALUE",
              help="A voice option of the chosen engine (repeatable); `voxfit engines` lists them.")
@click.option("--stream", is_flag=True, help="Write WAV audio to stdout as each sentence is ready.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan, the report and the metrics as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
@click.option("--max-chars", type=click.IntRange(min=1), default=None,
              help="Longest input accepted (default 500,000 characters).")
@NO_CACHE
@click.pass_context
def run_cmd(ctx: click.Context, text: Optional[str], file: Optional[str], output: Optional[Path],
            model: Optional[str], device: Optional[str], assignments: tuple[str, ...], stream: bool, as_json: bool,
            quiet: bool, max_chars: Optional[int], no_cache: bool, **voice_flags: Any) -> None:
    """Speak TEXT (or -f FILE, or - for stdin) into a WAV file.

    Voice options: --NAME VALUE for any option of the chosen engine (listed below with the engines that take
    each), or -O NAME=VALUE."""
    from voxfit.speaking.session import Session
    from voxfit.speaking.text import DEFAULT_MAX_CHARS, read_input

    started = time.perf_counter()
    # Everything the user can get wrong is checked before the engine is loaded.
    spoken = read_input(text, file, max_chars or DEFAULT_MAX_CHARS)
    out_path = _output(text, file, output, stream)
    options = _voice_options(voice_flags, assignments)
    obj: Context = ctx.obj
    planned = build_plan(obj, model, device, None, no_cache=no_cache)  # the remembered plan when nothing changed
    session = Session(settings=planned.host.settings, host=planned.host, plan=planned.plan, options=options,
                      started=started)
    try:
        metrics = _speak(session, spoken, out_path, started, show_bar=not quiet and not as_json)
    finally:
        session.close()
    planned.remember()  # only now: a run that failed leaves no plan behind for the next
    _report(session, planned, metrics, out_path, as_json, quiet)


def _speak(session: Any, spoken: str, out_path: Optional[Path], started: float, show_bar: bool) -> Any:
    """Synthesize into the file (atomically) or onto stdout; the run's metrics."""
    from voxfit.speaking.audio_io import StreamWavWriter, open_wav_output
    from voxfit.speaking.synthesis import Metrics

    stream = out_path is None
    show_bar = show_bar and sys.stderr.isatty() and len(session.chunks(spoken)) > 2
    writer = (StreamWavWriter(sys.stdout.buffer, session.sample_rate) if stream
              else open_wav_output(out_path, session.sample_rate))
    metrics = Metrics()
    with writer:
        if not show_bar:  # streaming: a listener hears the first clause while the rest is made
            for audio in session.stream(spoken, metrics=metrics, started=started, clause_first=stream):
                writer.write(audio.pcm)
            return metrics
        with click.progressbar(length=len(spoken), label="speaking", file=sys.stderr, show_eta=True,
                               show_percent=True) as bar:
            for audio in session.stream(spoken, metrics=metrics, started=started, clause_first=stream,
                                        on_chunk=lambda chunk: bar.update(len(chunk) + 1)):
                writer.write(audio.pcm)
    return metrics


def _report(session: Any, planned: Any, metrics: Any, out_path: Optional[Path], as_json: bool, quiet: bool) -> None:
    report = session.report(metrics)
    target = "stdout" if out_path is None else str(out_path)
    info = sys.stderr if out_path is None else sys.stdout  # keep stdout clean for the audio stream
    if as_json:
        data = {"output": target, **report.as_dict(), "plan": session.plan.model_dump(mode="json"),
                "plan_cache": planned.cache.as_dict()}
        click.echo(json.dumps(data, indent=2, default=str), file=info)
    elif not quiet:
        for line in summary(target, report):
            click.echo(line, file=info)


def summary(out: str, report: Any) -> list[str]:
    metrics = report.metrics
    rtf = f"RTF {metrics.rtf:.3f}" if metrics.rtf is not None else "RTF n/a"
    first = metrics.time_to_first_audio_seconds
    lines = [
        f"wrote {out}: {metrics.audio_seconds:.2f} s of audio ({metrics.chunks} sentence"
        f"{'s' if metrics.chunks != 1 else ''}, {metrics.sample_rate} Hz)",
        *("  " + line if not line.startswith(" ") else line for line in report.lines()),
        f"  {rtf} (synthesis {metrics.synthesis_seconds:.2f} s), first audio after {first:.2f} s"
        f" (engine load {report.load_seconds:.2f} s), peak RSS {describe_memory(metrics.peak_rss_bytes)}",
    ]
    if metrics.tokens_per_s is not None:
        lines.append(f"  {metrics.tokens} tokens, {metrics.tokens_per_s:.1f} tokens/s")
    gpu = metrics.engine
    if "gpu_util_mean_percent" in gpu:
        lines.append(
            f"  GPU {gpu['gpu_util_mean_percent']:.0f}% busy on average (max {gpu.get('gpu_util_max_percent', 0):.0f}%)"
            f" during synthesis, peak GPU memory {describe_memory(gpu.get('gpu_mem_used_peak_bytes'))}"
        )
    return lines

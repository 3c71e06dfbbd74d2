"""The voices a server offers: each ``--model`` planned, checked against the memory together, then loaded.

Each model gets its own plugin host, plan and sessions, exactly as ``voxfit run``
would make them (the session plans and loads; nothing here re-implements it).
Before anything is loaded, the plans' peak-memory estimates are added up per
memory pool (system RAM, or each device's own memory), times the workers per
engine, and compared with what the hardware profile says is free, less the
planner's headroom: a model that does not fit beside the others is refused at
start with the numbers, not discovered at its first request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from voxfit.errors import NoFeasiblePlan, UsageError
from voxfit.models import HardwareProfile, Plan
from voxfit.planning.hardware import describe_memory
from voxfit.settings import Settings

#: OpenAI's built-in voice names: accepted and listed, each an alias of the default voice unless configured.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")


@dataclass
class Voice:
    """One voice the server offers: its plan and the sessions that speak it (one per worker)."""

    name: str
    plan: Plan
    sessions: list[Any]
    reference: Optional[str] = None  # what --model named (None: the default voice)
    aliases: list[str] = field(default_factory=list)
    memory_slots: Optional[int] = None  # requests at once on one engine that its memory allows (fit_concurrency)

    @property
    def options_model(self) -> Optional[type]:
        return self.sessions[0].options_schema()

    @property
    def engine(self) -> str:
        return str(self.sessions[0].loaded.proposal.engine)

    @property
    def registry(self) -> Any:
        return self.sessions[0].host.registry

    def options(self, given: dict[str, Any]) -> Any:
        """The request's voice options validated once, for the engine this voice runs (UsageError if wrong)."""
        return self.sessions[0].voice_options(given)

    @property
    def slots_per_engine(self) -> int:
        """Requests one loaded engine runs at once: its ``max_concurrent`` if it declares ConcurrentSynthesis."""
        from voxfit.engine import ConcurrentSynthesis

        engine = self.sessions[0].engine
        wanted = max(1, int(engine.max_concurrent)) if isinstance(engine, ConcurrentSynthesis) else 1
        return wanted if self.memory_slots is None else max(1, min(wanted, self.memory_slots))

    @property
    def wanted_slots(self) -> int:
        """What the engine would run at once, before memory is counted."""
        from voxfit.engine import ConcurrentSynthesis

        engine = self.sessions[0].engine
        return max(1, int(engine.max_concurrent)) if isinstance(engine, ConcurrentSynthesis) else 1

    def peak_bytes(self) -> Optional[int]:
        """The plan's peak for one request on each engine, plus what each further request at once holds."""
        estimate = self.plan.chosen.estimate if self.plan.chosen else None
        if estimate is None or estimate.peak_memory_bytes is None:
            return None
        extra = (self.slots_per_engine - 1) * (estimate.per_request_bytes or 0)
        return (estimate.peak_memory_bytes + extra) * len(self.sessions)

    @property
    def sample_rate(self) -> int:
        return int(self.sessions[0].sample_rate)

    def summary(self) -> dict[str, Any]:
        chosen = self.sessions[0].loaded.proposal
        estimate = chosen.estimate
        from dataclasses import asdict

        from voxfit.options import option_docs

        pacing = self.registry.pacing_for(self.engine)
        return {
            "id": self.name,  # what Open WebUI and OpenAI-style clients read
            "name": self.name,
            "voice": self.name,
            "aliases": self.aliases,
            "model": {"family": self.plan.model.family, "name": self.plan.model.name, "source": self.plan.model.source},
            "sample_rate": self.sample_rate,
            "engine": chosen.label(),
            "device": chosen.device,
            "engines": len(self.sessions),
            "requests_per_engine": self.slots_per_engine,
            "estimate": {"rtf": estimate.rtf, "peak_memory_bytes": estimate.peak_memory_bytes,
                         "per_request_bytes": estimate.per_request_bytes,
                         "peak_memory_bytes_serving": self.peak_bytes()},
            "options": [asdict(doc) for doc in option_docs(self.options_model)],
            "speed": {"option": pacing.length_option, "rule": f"{pacing.length_option} = 1 / speed"} if pacing
            else None,
            "plan_summary": self.plan.summary,
        }


def _memory_pool(plan: Plan) -> tuple[str, Optional[int], str]:
    """Where a plan's peak memory comes from: (key, free bytes, in words)."""
    chosen = plan.chosen
    assert chosen is not None
    if chosen.memory_pool == "device":
        device = plan.hardware.device(chosen.device)
        return chosen.device, (device.memory_free_bytes if device else None), f"{chosen.device}'s memory"
    return "system", plan.hardware.memory_available_bytes, "system RAM"


def fit_concurrency(voices: list["Voice"], headroom: float) -> list[str]:
    """Bound the requests each engine runs at once by memory: after every voice's one request per engine,
    each further request at once must fit in what is left of its pool (with the headroom). Returns a line
    for each voice whose engine would run more at once than its memory allows."""
    room: dict[str, int] = {}
    for voice in voices:
        key, free, _ = _memory_pool(voice.plan)
        peak = voice.plan.chosen.estimate.peak_memory_bytes if voice.plan.chosen else None
        if free is not None and peak is not None:
            room.setdefault(key, int(free * (1.0 - headroom)))
            room[key] -= peak * len(voice.sessions)
    notes = []
    for voice in voices:
        key, _, where = _memory_pool(voice.plan)
        each = voice.plan.chosen.estimate.per_request_bytes if voice.plan.chosen else None
        wanted = voice.wanted_slots
        if wanted <= 1 or not each or key not in room:
            continue
        fits = 1 + max(0, room[key] // (each * len(voice.sessions)))
        voice.memory_slots = min(wanted, fits)
        room[key] -= (voice.memory_slots - 1) * each * len(voice.sessions)
        if voice.memory_slots < wanted:
            notes.append(f"voice {voice.name}: {voice.memory_slots} request(s) at once per engine, not {wanted}: "
                         f"each holds ~{describe_memory(each)} while it runs and {where} has room for no more")
    return notes


def check_memory(plans: list[tuple[str, Plan]], workers: int, headroom: float) -> list[str]:
    """Refuse (UsageError) when the plans' peak estimates, ``workers`` times each, do not fit together.

    Returns notes for plans that could not be counted (no estimate, or no free-memory figure).
    """
    notes: list[str] = []
    used: dict[str, int] = {}
    holders: dict[str, list[str]] = {}
    for name, plan in plans:
        assert plan.chosen is not None
        peak = plan.chosen.estimate.peak_memory_bytes
        key, free, where = _memory_pool(plan)
        if peak is None or free is None:
            notes.append(f"voice {name}: {'no peak-memory estimate' if peak is None else 'free memory unknown'}"
                         f" for {where}; not counted in the memory budget")
            continue
        budget = int(free * (1.0 - headroom))
        need = peak * workers
        if used.get(key, 0) + need > budget:
            each = f"{workers} x ~{describe_memory(peak)}" if workers > 1 else f"~{describe_memory(peak)}"
            beside = holders.get(key)
            if beside:
                why = (f"does not fit beside {', '.join(beside)} ({describe_memory(used[key])}) in {where}: "
                       f"{describe_memory(budget)} usable")
            else:
                why = f"does not fit in {where}: {describe_memory(budget)} usable"
            raise UsageError(
                f"voice {name} ({each} peak) {why} ({describe_memory(free)} free less the {headroom:.0%} headroom,"
                " VOXFIT_MEMORY_HEADROOM); serve fewer models or fewer workers per engine"
            )
        used[key] = used.get(key, 0) + need
        holders.setdefault(key, []).append(name)
    return notes


def plan_voices(settings: Settings, models: list[Optional[str]], host_for: Callable[[Settings], Any],
                hardware: Optional[HardwareProfile] = None) -> list[tuple[str, Optional[str], Any, Plan]]:
    """(name, reference, host, plan) for each model, detected once; refuses a model nothing can run."""
    from voxfit.planning.planner import detect, make_plan

    out: list[tuple[str, Optional[str], Any, Plan]] = []
    for reference in models:
        model_settings = settings.model_copy(update={"model": reference})
        host = host_for(model_settings)
        if hardware is None:
            hardware = detect(host)
        plan = make_plan(host, hardware=hardware)
        shown = reference or "the default voice"
        if plan.chosen is None:
            raise NoFeasiblePlan(f"model {shown}: {plan.summary}")
        name = plan.model.name
        taken = next((r for n, r, _, _ in out if n == name), "")
        if taken != "":
            raise UsageError(f"--model {shown} and --model {taken or 'the default voice'} are both voice {name!r}: "
                             "serve each model once")
        out.append((name, reference, host, plan))
    return out


def load_voices(planned: list[tuple[str, Optional[str], Any, Plan]], workers: int,
                aliases: dict[str, str], on_loaded: Optional[Callable[[Voice], None]] = None) -> list[Voice]:
    """Load ``workers`` sessions per voice (closing everything already loaded if one fails)."""
    from voxfit.speaking.session import Session

    names = {name for name, _, _, _ in planned}
    for alias, target in aliases.items():
        if target not in names:
            raise UsageError(f"voice alias {alias}={target}: no voice {target!r} is served "
                             f"(voices: {', '.join(sorted(names))})")
        if alias in names:
            raise UsageError(f"voice alias {alias}={target}: {alias!r} is already a voice's name")
    voices: list[Voice] = []
    try:
        for name, reference, host, plan in planned:
            sessions: list[Any] = []
            voice = Voice(name=name, plan=plan, sessions=sessions, reference=reference,
                          aliases=sorted(a for a, t in aliases.items() if t == name))
            voices.append(voice)
            for _ in range(workers):
                sessions.append(Session(settings=host.settings, host=host, plan=plan))
            if on_loaded is not None:
                on_loaded(voice)
    except BaseException:
        close_voices(voices)
        raise
    return voices


def close_voices(voices: list[Voice]) -> None:
    for voice in voices:
        for session in voice.sessions:
            session.close()

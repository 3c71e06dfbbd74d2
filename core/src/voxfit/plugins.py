"""Finding, loading and calling plugins, each isolated from the others.

Every entry point of the ``voxfit`` group is imported on its own. A plugin
that fails to import is listed as broken, one that raises
:class:`~voxfit.errors.PluginUnavailable` as skipped, one built for another
major hook API as refused. Each hook implementation is registered behind a
guard, so one that raises or returns the wrong type loses only its own
contribution; the guard records the problem and pluggy carries on with the
others. In strict mode the guard raises instead.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pluggy
from pydantic import TypeAdapter, ValidationError

from voxfit import builtin, hookspecs
from voxfit.engine import Engine
from voxfit.errors import EngineLoadError, ModelError, PluginError, PluginUnavailable, one_line
from voxfit.models import (
    Detection,
    EnvChange,
    ModelSpec,
    PlanInputs,
    PluginInfo,
    PluginProblem,
    Proposal,
    ProposalFacts,
    ProposalOptions,
)
from voxfit.registry import Registry
from voxfit.settings import Settings

ENTRY_POINT_GROUP = "voxfit"
API_ATTRIBUTE = "VOXFIT_HOOK_API"
_IMPL_MARK = f"{hookspecs.PROJECT}_impl"
#: Why a plugin was not loaded although installed; the summary of a failed plan groups plugins by these.
BLOCKED = "blocked by -p no:NAME or VOXFIT_BLOCK_PLUGINS"
NOT_ALLOWED = "not in the allow-list (--allow-plugin or VOXFIT_ALLOW_PLUGINS)"
HOOK_NAMES = tuple(
    name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
)
REGISTRATION_HOOKS = ("register_engines", "register_device_families")

#: The core's own plugins (its engines, under ``voxfit.engines``) are entry points of this distribution, found
#: like any other plugin: the core's own engines travel the same road as a stranger's. They load first.
CORE_DISTRIBUTION = "voxfit"


def entry_points() -> list[importlib.metadata.EntryPoint]:
    """Every plugin's entry point: the core's own first, then the others by name (the order hooks run in)."""
    found = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    return sorted(found, key=lambda e: _distribution(e) != CORE_DISTRIBUTION)


def default_plugins() -> list[str]:
    """Names of the core's own plugins (shipped with the core; kept by an allow-list unless blocked by name)."""
    return [ep.name for ep in entry_points() if _distribution(ep) == CORE_DISTRIBUTION]


def _distribution(ep: importlib.metadata.EntryPoint) -> Optional[str]:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None


def _returns_nothing(value: Any) -> Any:
    raise TypeError("registration hooks call register(...) and return None")


def _check_engine(value: Any) -> Any:
    if not isinstance(value, Engine):
        raise TypeError(f"expected an Engine (backend, sample_rate, synthesize, ...), got {type(value).__name__}")
    return value


def _instance_of(kind: type) -> Callable[[Any], Any]:
    """A hook result must be the documented model itself: a dict that looks like one is a mistake, not a model
    (a ``default_model`` answering a dict would otherwise become a model nobody described)."""
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"expected a {kind.__name__}, got {type(value).__name__}")
        return TypeAdapter(kind).validate_python(value)
    return check


def _list_of(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"expected a list of {kind.__name__}, got {type(value).__name__}")
        wrong = next((item for item in value if not isinstance(item, kind)), None)
        if wrong is not None:
            raise TypeError(f"expected a list of {kind.__name__}, got a {type(wrong).__name__} in it")
        return TypeAdapter(list[kind]).validate_python(value)  # type: ignore[valid-type]
    return check


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "detect": _instance_of(Detection),
    "score_config": _list_of(Proposal),
    "prepare_env": _list_of(EnvChange),
    "load_engine": _check_engine,
    "disable_training_artifacts": TypeAdapter(list[str]).validate_python,
    "resolve_model": _instance_of(ModelSpec),
    "default_model": _instance_of(ModelSpec),
    "plan_inputs": _instance_of(PlanInputs),
    "register_engines": _returns_nothing,
    "register_device_families": _returns_nothing,
}


def _stamp_owner(hook: str, result: Any, plugin: str) -> Any:
    # The owner of a proposal or an env change is whoever returned it, not what it claims.
    if hook in ("score_config", "prepare_env"):
        for item in result:
            item.plugin = plugin
    elif hook == "detect":
        for device in result.devices:
            device.detected_by = plugin
        result.notes = [f"{plugin}: {note}" for note in result.notes]
    elif hook in ("resolve_model", "default_model"):
        result.resolved_by = plugin
    return result


def check_api_version(api: Any) -> Optional[str]:
    """Why a plugin declaring hook API ``api`` is refused, or None when the core speaks it."""
    core = hookspecs.HOOK_API_VERSION
    if api is None:
        return f"declares no {API_ATTRIBUTE} (the core speaks {core})"
    try:
        major, minor = (int(part) for part in str(api).split(".")[:2])
    except ValueError:
        return f"declares {API_ATTRIBUTE} = {api!r}, not a MAJOR.MINOR version (the core speaks {core})"
    core_major, core_minor = (int(part) for part in core.split("."))
    if major < core_major:
        return (
            f"built for hook API {api}, the core speaks {core}: since 2.0 engines and model formats are "
            "registered through hooks and load_engine reaches the owner only; upgrade the plugin "
            "(docs/writing-a-plugin.md, 'Upgrading from hook API 1.x')"
        )
    if major > core_major or minor > core_minor:
        return f"built for hook API {api}, newer than the core's {core}: upgrade voxfit"
    return None


@dataclass
class PluginHost:
    """A pluggy PluginManager plus the bookkeeping that keeps plugins isolated."""

    settings: Settings
    pm: pluggy.PluginManager = field(init=False)
    infos: list[PluginInfo] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)
    _registry: Optional[Registry] = field(default=None, init=False, repr=False)
    #: Each plugin's declared PROPOSAL_OPTIONS and PROPOSAL_FACTS models.
    proposal_types: dict[str, tuple[type[ProposalOptions], type[ProposalFacts]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(builtin, name="voxfit.builtin")

    # -- loading ---------------------------------------------------------

    @classmethod
    def from_entry_points(cls, settings: Settings, extra: Iterable[tuple[str, object]] = ()) -> "PluginHost":
        host = cls(settings)
        host.add_entry_points(entry_points())
        for name, obj in extra:
            host.add_entry_point(name, functools.partial(_itself, obj), None, None)
        return host

    def add_default_plugins(self) -> None:
        """The core's own plugins (its engines) alone, loaded and guarded like any entry point."""
        self.add_entry_points([ep for ep in entry_points() if _distribution(ep) == CORE_DISTRIBUTION])

    def add_entry_points(self, eps: Iterable[importlib.metadata.EntryPoint]) -> None:
        for ep in eps:
            dist = getattr(ep, "dist", None)
            self.add_entry_point(ep.name, ep.load, dist.name if dist else None, dist.version if dist else None)

    def add_entry_point(
        self, name: str, load: Callable[[], object], distribution: Optional[str], version: Optional[str]
    ) -> PluginInfo:
        info = PluginInfo(name=name, distribution=distribution, version=version, status="ok")
        self.infos.append(info)
        blocked = self._blocked_reason(name)
        if blocked:
            info.status, info.error = "blocked", blocked
            return info
        if any(other.name == name and other is not info and other.status == "ok" for other in self.infos):
            return self._fail(info, "broken", f"another plugin is already registered as {name!r}")
        try:
            obj = load()
        except PluginUnavailable as exc:
            return self._fail(info, "skipped", str(exc) or "unavailable")
        except Exception as exc:  # a broken plugin must not take the run down
            return self._fail(info, "broken", f"import failed: {one_line(exc)}")
        api = getattr(obj, API_ATTRIBUTE, None)
        info.api_version = None if api is None else str(api)
        refused = check_api_version(api)
        if refused:
            return self._fail(info, "refused", refused)
        try:
            proxy, hooks = self._guarded_proxy(name, obj)
            self.pm.register(proxy, name=name)
        except Exception as exc:
            return self._fail(info, "broken", f"invalid hook implementations: {one_line(exc)}")
        info.hooks = hooks
        info.module = getattr(obj, "__name__", None) if inspect.ismodule(obj) else type(obj).__module__
        declared = _proposal_types(obj)
        if isinstance(declared, str):
            return self._fail(info, "broken", declared)
        self.proposal_types[name] = declared
        return info

    def _blocked_reason(self, name: str) -> Optional[str]:
        if name in self.settings.block_plugins:
            return BLOCKED
        allow = self.settings.allow_plugins
        # The allow-list picks among installed plugins; the core's own default plugins stay
        # unless blocked by name (-p no:NAME), like a built-in of any other tool.
        if allow is not None and name not in allow and name not in default_plugins():
            return NOT_ALLOWED
        return None

    def _fail(self, info: PluginInfo, status: str, error: str) -> PluginInfo:
        info.status, info.error = status, error  # type: ignore[assignment]
        if self.settings.strict:
            raise PluginError(f"plugin {info.name!r} {status}: {error}")
        return info

    def _guarded_proxy(self, name: str, obj: object) -> tuple[object, list[str]]:
        proxy = _GuardedPlugin()
        hooks = []
        for attr in dir(obj):
            fn = getattr(obj, attr, None)
            if not callable(fn) or not hasattr(fn, _IMPL_MARK):
                continue
            opts = getattr(fn, _IMPL_MARK)
            hook = opts.get("specname") or attr
            if hook not in HOOK_NAMES:
                raise ValueError(f"{attr!r} implements no known hook (known: {', '.join(HOOK_NAMES)})")
            guard = self._guard_wrapper if (opts.get("wrapper") or opts.get("hookwrapper")) else self._guard
            setattr(proxy, attr, guard(name, hook, fn))
            hooks.append(hook)
        return proxy, sorted(set(hooks))

    # -- guards ----------------------------------------------------------

    def _record(self, plugin: str, hook: str, error: str) -> None:
        if self.settings.strict:
            raise PluginError(f"plugin {plugin!r} failed in hook {hook!r}: {error}")
        self.problems.append(PluginProblem(plugin=plugin, hook=hook, error=error))

    def _validate(self, plugin: str, hook: str, result: Any) -> Any:
        try:
            return _VALIDATORS[hook](result)
        except (ValidationError, TypeError, ValueError) as exc:
            detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            self._record(plugin, hook, f"returned the wrong type ({type(result).__name__}): {detail}")
            return None

    def _guard(self, plugin: str, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if hook in REGISTRATION_HOOKS:
                args, kwargs = _stamp_register(fn, plugin, args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except (PluginError, EngineLoadError):
                raise  # strict-mode errors, and the documented "this load failed, fall back" signal
            except ModelError as exc:
                if hook in ("resolve_model", "default_model"):
                    raise  # "this model is mine but broken": the user's error, not the plugin's
                self._record(plugin, hook, one_line(exc))
                return None
            except Exception as exc:
                self._record(plugin, hook, one_line(exc))
                return None
            if result is None:
                return None
            result = self._validate(plugin, hook, result)
            return None if result is None else _stamp_owner(hook, result, plugin)

        return guarded

    def _guard_wrapper(self, plugin: str, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.isgeneratorfunction(fn):
            raise TypeError(f"{hook} wrapper of {plugin!r} must be a generator function")

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            gen = fn(*args, **kwargs)
            try:
                next(gen)
            except Exception as exc:
                self._record(plugin, hook, f"wrapper failed before yielding: {one_line(exc)}")
                return (yield)
            inner = yield
            try:
                gen.send(inner)
            except StopIteration as stop:
                if stop.value is None:
                    return inner
                checked = self._validate(plugin, hook, stop.value)
                return inner if checked is None else checked
            except PluginError:
                raise
            except Exception as exc:
                self._record(plugin, hook, f"wrapper failed: {one_line(exc)}")
                return inner
            self._record(plugin, hook, "wrapper yielded more than once")
            return inner

        return guarded

    # -- calling ---------------------------------------------------------

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def call(self, hook: str, **kwargs: Any) -> tuple[Any, list[PluginProblem]]:
        """Call a hook; return its result and the problems recorded during this call."""
        before = len(self.problems)
        result = getattr(self.pm.hook, hook)(**kwargs)
        return result, self.problems[before:]

    def call_owner(self, hook: str, owner: str, **kwargs: Any) -> tuple[Any, list[PluginProblem]]:
        """Call a hook on one plugin only (e.g. ``load_engine`` on the proposal's owner)."""
        before = len(self.problems)
        others = [obj for name, obj in self.pm.list_name_plugin() if name != owner]
        result = self.pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)
        return result, self.problems[before:]

    def active(self) -> list[str]:
        return [info.name for info in self.infos if info.status == "ok"]

    def unknown_allowed(self) -> list[str]:
        """Allow-listed names no installed plugin has: a typo there silently allows nothing."""
        installed = {info.name for info in self.infos}
        return [name for name in self.settings.allow_plugins or [] if name not in installed]

    def left_out(self) -> list[str]:
        """Why each plugin that is not loaded is not, grouped, as phrases for a summary.

        e.g. "cpu_onnx, cuda, mps, wsl were left out by the allow-list (--allow-plugin /
        VOXFIT_ALLOW_PLUGINS: nosuch)", "'nosuch' is not an installed plugin (installed: ...)".
        """
        if not self.infos:
            return ["no voxfit plugin is installed (pip install 'voxfit[all]')"]
        phrases = []
        for reason, what in ((NOT_ALLOWED, "left out by"), (BLOCKED, "blocked by")):
            names = [info.name for info in self.infos if info.status == "blocked" and info.error == reason]
            if not names:
                continue
            source = "-p no:NAME / VOXFIT_BLOCK_PLUGINS"
            if reason == NOT_ALLOWED:
                allowed = ", ".join(self.settings.allow_plugins or []) or "empty"
                source = f"the allow-list (--allow-plugin / VOXFIT_ALLOW_PLUGINS: {allowed})"
            phrases.append(f"{', '.join(names)} {'was' if len(names) == 1 else 'were'} {what} {source}")
        for info in self.infos:
            if info.status in ("broken", "skipped", "refused"):
                phrases.append(f"{info.name} is {info.status}: {info.error}")
        installed = ", ".join(info.name for info in self.infos)
        for name in self.unknown_allowed():
            phrases.append(f"{name!r} is not an installed plugin (installed: {installed})")
        return phrases

    def typed(self, proposals: Iterable[Proposal]) -> list[Proposal]:
        """Each proposal with its options and facts validated against its owner's declared models, at the edge
        where proposals enter the core (from score_config, or from a remembered plan); one that does not
        validate is dropped and reported as its owner's problem."""
        out = []
        for p in proposals:
            options, facts = self.proposal_types.get(p.plugin, (ProposalOptions, ProposalFacts))
            try:
                if type(p.options) is not options:
                    p.options = options.model_validate(p.options.model_dump())
                if type(p.facts) is not facts:
                    p.facts = facts.model_validate(p.facts.model_dump())
            except ValidationError as exc:
                self._record(p.plugin, "score_config", f"proposal {p.label()}: {exc.errors()[0]['msg']} "
                                                       f"({'.'.join(map(str, exc.errors()[0]['loc']))})")
                continue
            out.append(p)
        return out

    def plan_inputs(self) -> tuple[dict[str, PlanInputs], list[str]]:
        """What each loaded plugin declares its planning hooks read, and the plugins that read hardware in
        ``detect`` without declaring anything (a plan cannot be remembered while one of those is loaded)."""
        declared: dict[str, PlanInputs] = {}
        for info in self.infos:
            if info.status != "ok":
                continue
            answers, _ = self.call_owner("plan_inputs", info.name, settings=self.settings)
            if answers:
                declared[info.name] = answers[0]
        undeclared = [info.name for info in self.infos
                      if info.status == "ok" and "detect" in info.hooks and info.name not in declared]
        return declared, undeclared

    def modules(self) -> list[str]:
        """The modules the loaded plugins came from (the core's own default plugins included)."""
        return [info.module for info in self.infos if info.status == "ok" and info.module]

    # -- registries --------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """Engines and device families the loaded plugins registered (built on first use)."""
        if self._registry is None:
            registry = Registry()
            self.pm.hook.register_engines(register=registry.add_engine)
            self.pm.hook.register_device_families(register=registry.add_family)
            self._registry = registry
        return self._registry

    def resolve_model(self, reference: Optional[str]) -> ModelSpec:
        """What the user named (or nothing) as a ModelSpec, through the plugins' model formats."""
        if not reference:
            spec: Optional[ModelSpec]
            spec, _ = self.call("default_model", settings=self.settings)
            if spec is None:
                phrases = self.left_out()
                why = ": " + "; ".join(phrases) if phrases else (
                    ": pip install 'voxfit[cpu-onnx]' brings an embedded default voice")
                raise ModelError(f"no loaded plugin offers a default model (and none was named with --model / "
                                 f"VOXFIT_MODEL){why}")
            return spec
        spec, problems = self.call("resolve_model", reference=reference, settings=self.settings)
        if spec is not None:
            return spec
        if not problems and not Path(reference).expanduser().exists():
            raise ModelError(f"model not found: {reference}")
        formats = sorted({e.description or e.backend for e in self.registry.engines.values()})
        detail = f" ({problems[0].plugin}: {problems[0].error})" if problems else ""
        left_out = "".join(f"; {phrase}" for phrase in self.left_out())
        raise ModelError(
            f"{reference} is not a model voxfit knows{detail}: the loaded plugins read "
            + ("; ".join(formats) or "no model format at all") + left_out
        )


class _GuardedPlugin:
    """What pluggy registers for a plugin: its hook implementations, each behind a guard (hashable by identity)."""


def _proposal_types(obj: object) -> tuple[type[ProposalOptions], type[ProposalFacts]] | str:
    """A plugin's declared proposal models, or why they are not usable."""
    options = getattr(obj, "PROPOSAL_OPTIONS", ProposalOptions)
    facts = getattr(obj, "PROPOSAL_FACTS", ProposalFacts)
    if not (isinstance(options, type) and issubclass(options, ProposalOptions)):
        return "PROPOSAL_OPTIONS must be a subclass of voxfit.sdk.ProposalOptions"
    if not (isinstance(facts, type) and issubclass(facts, ProposalFacts)):
        return "PROPOSAL_FACTS must be a subclass of voxfit.sdk.ProposalFacts"
    return options, facts


def _itself(obj: object) -> object:
    return obj


def _stamp_register(fn: Callable[..., Any], plugin: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Give a registration hook a ``register`` that records who registered what."""
    names = list(inspect.signature(fn).parameters)
    bound = dict(zip(names[: len(args)], args, strict=True), **kwargs)
    if "register" in bound:
        collect = bound["register"]
        bound["register"] = lambda info: collect(info, plugin)
    return (), bound

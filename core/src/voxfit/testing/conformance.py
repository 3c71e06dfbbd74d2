"""The plugin conformance kit: check a plugin module against the hook API's contracts.

For a plugin author's own test suite (pytest or not: plain exceptions only)::

    from voxfit.testing.conformance import assert_conformant
    import my_plugin

    def test_my_plugin_conforms():
        assert_conformant(my_plugin)

Every ``check_*`` function returns a list of problems, one readable line each
(empty: conformant); :func:`assert_conformant` runs them all and raises one
``AssertionError`` listing every problem. The checks:

* :func:`check_api_version`     ``VOXFIT_HOOK_API`` is one the core accepts;
* :func:`check_hook_signatures` every ``@hookimpl`` implements a known hook and
  takes only argument names that hook passes (and none with a default, which
  pluggy would never pass);
* :func:`check_plan_inputs`     a plugin that implements ``detect`` declares its
  ``plan_inputs`` (else no plan is remembered while it is loaded);
* :func:`check_registrations`   ``register_engines`` / ``register_device_families``
  register valid :class:`~voxfit.engine.EngineInfo` / :class:`~voxfit.registry.DeviceFamilyInfo`;
* :func:`check_light_hooks`     in a fresh Python process (so that a framework
  already imported by the test process hides nothing): importing the plugin,
  ``detect`` (bounded time), the registration and model hooks, ``score_config``
  and ``prepare_env`` import no heavy framework and leave ``os.environ`` alone,
  and return the documented types; ``detect``, ``score_config`` and
  ``prepare_env`` read no environment variable and open no file that
  ``plan_inputs`` does not declare (the core's own inputs aside); proposals carry reasons, a device of the
  profile and a registered engine; environment changes carry reasons;
* :func:`check_load`            the plugin's best feasible proposal, planned
  and loaded through the real core (``prepare_env`` -> ``load_engine`` ->
  ``disable_training_artifacts`` -> the invariant check), is an
  :class:`~voxfit.engine.Engine` whose ``synthesize`` yields valid 16-bit PCM
  at its sample rate, and that takes its registered options' defaults.

Pass ``load=False`` for a plugin whose engine cannot run on this machine and
check its proposals against a saved profile instead (``hardware=`` a
``voxfit detect --json`` file). Importing this module is light.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

#: Frameworks a plugin must not import while the core plans (import them in ``load_engine``); every module a
#: registered engine requires counts too.
HEAVY_MODULES = ("torch", "onnxruntime", "tensorflow", "jax")
DETECT_SECONDS = 2.0
SAMPLE_TEXT = "Hello there."
_IMPL_MARK = "voxfit_impl"
_LIGHT_HOOKS = ("plan_inputs", "detect", "register_engines", "register_device_families", "resolve_model",
                "default_model", "score_config", "prepare_env")
#: The hooks whose reads a remembered plan stands on: what they read must be declared in plan_inputs.
_PLANNING_HOOKS = ("detect", "score_config", "prepare_env")
#: Reads that are not a plugin's inputs: voxfit's settings (in the plan's key), the standard locations and
#: locale variables every library consults, and the files the core reads for the CPU, its load and budget.
_UNDECLARED_VARIABLES = ("VOXFIT_", "PYTHON", "LC_", "XDG_")
_UNDECLARED_VARIABLE_NAMES = ("HOME", "PATH", "TMPDIR", "TEMP", "TMP", "LANG", "LANGUAGE", "TERM", "USER", "LOGNAME",
                              "SHELL", "PWD", "COLUMNS", "LINES", "NO_COLOR", "TZ")
_CORE_PATHS = ("/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/pressure/", "/proc/self/",
               "/sys/fs/cgroup",
               "/sys/devices/system/cpu", "/dev/null", "/dev/urandom", "/etc/localtime", "/usr/share/zoneinfo")
_CHILD_TIMEOUT = 120.0

ModelArg = Union[str, Path, Any, None]  # a reference, a ModelSpec, or None for the default model
HardwareArg = Union[str, Path, Any, None]  # a profile file, a HardwareProfile, or None to detect here


# -- the module's declarations --------------------------------------------------


def plugin_name(module: Any) -> str:
    """The plugin's name: its ``NAME``, else its entry point's name, else the module's last component."""
    name = getattr(module, "NAME", None)
    if isinstance(name, str) and name:
        return name
    from voxfit.plugins import entry_points

    module_name = getattr(module, "__name__", "")
    for ep in entry_points():
        if ep.value == module_name:
            return ep.name
    return module_name.rsplit(".", 1)[-1] or "plugin"


def hook_implementations(module: Any) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """``(attribute, hook, function, hookimpl options)`` for every ``@hookimpl`` of the module."""
    found = []
    for attr in sorted(dir(module)):
        fn = getattr(module, attr, None)
        opts = getattr(fn, _IMPL_MARK, None) if callable(fn) else None
        if isinstance(opts, dict):
            found.append((attr, opts.get("specname") or attr, fn, opts))
    return found


def _spec_argnames(hook: str) -> list[str]:
    from voxfit import hookspecs

    return list(inspect.signature(getattr(hookspecs, hook)).parameters)


def _known_hooks() -> tuple[str, ...]:
    from voxfit.plugins import HOOK_NAMES

    return HOOK_NAMES


def check_api_version(module: Any) -> list[str]:
    """The declared ``VOXFIT_HOOK_API`` is one the core accepts."""
    from voxfit.plugins import API_ATTRIBUTE
    from voxfit.plugins import check_api_version as core_check

    refused = core_check(getattr(module, API_ATTRIBUTE, None))
    return [f"hook API: {refused}"] if refused else []


def check_hook_signatures(module: Any) -> list[str]:
    """Every ``@hookimpl`` implements a known hook and accepts only the arguments that hook passes."""
    problems = []
    impls = hook_implementations(module)
    if not impls:
        problems.append("no @hookimpl functions: the core would load the plugin and call nothing")
    known = _known_hooks()
    for attr, hook, fn, opts in impls:
        where = attr if attr == hook else f"{attr} (specname {hook})"
        if hook not in known:
            problems.append(f"{where}: implements no known hook (known: {', '.join(known)})")
            continue
        documented = _spec_argnames(hook)
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}: signature cannot be read: {exc}")
            continue
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                problems.append(f"{where}: takes *{p.name}: pluggy passes arguments by name only "
                                f"(name them: {', '.join(documented)})")
            elif p.name not in documented:
                problems.append(f"{where}: accepts {p.name!r}, which the {hook} hook does not pass "
                                f"(it passes: {', '.join(documented)})")
            elif p.default is not p.empty:
                problems.append(f"{where}: argument {p.name!r} has a default, so pluggy never passes it "
                                "(drop the default)")
        if (opts.get("wrapper") or opts.get("hookwrapper")) and not inspect.isgeneratorfunction(fn):
            problems.append(f"{where}: a wrapper must be a generator function (yield once)")
    return problems


# -- plan inputs -----------------------------------------------------------------------


def check_plan_inputs(module: Any) -> list[str]:
    """A plugin that detects hardware names what its planning hooks read (``plan_inputs``), validly."""
    from voxfit.models import PlanInputs

    impls = {hook: fn for _, hook, fn, _ in hook_implementations(module)}
    if "plan_inputs" not in impls:
        if "detect" in impls:
            return ["detect is implemented but plan_inputs is not: no plan is remembered while this plugin is "
                    "loaded, since a change of its hardware could not be told (return PlanInputs(...) naming the "
                    "environment variables, device nodes and files detect reads; PlanInputs() if none)"]
        return []
    try:
        declared = _call(impls["plan_inputs"], {"settings": _default_settings()})
        if declared is None and "detect" in impls:
            return ["plan_inputs returned None: declare what detect reads (PlanInputs() if nothing)"]
        if declared is not None:
            PlanInputs.model_validate(declared)
    except Exception as exc:
        return [f"plan_inputs: {_one_line(exc)}"]
    return []


def _default_settings() -> Any:
    from voxfit.settings import Settings

    return Settings()


def _undeclared_reads(reads: dict[str, list[str]], declared: Any, cache_dir: str) -> list[str]:
    """The environment variables and paths a planning hook read that ``declared`` (PlanInputs as a dict) lacks.

    voxfit's cache directory is the core's (tune measurements key the plan; an atomic write also opens the
    directories above a file to sync them)."""
    import fnmatch

    environ = set(declared.get("environ", []))
    paths = [p.rstrip("/") for p in declared.get("paths", [])]
    globs = declared.get("globs", [])
    missing = []
    for name in reads.get("environ", []):
        if name in environ or name in _UNDECLARED_VARIABLE_NAMES or name.startswith(_UNDECLARED_VARIABLES):
            continue
        missing.append(f"environment variable {name}")
    roots = [str(Path(p).resolve()) for p in sys.path if isinstance(p, str) and p]
    roots += [sys.prefix, sys.base_prefix, cache_dir]
    above_cache = {str(parent) for parent in Path(cache_dir).parents}
    for path in reads.get("paths", []):
        if (path.startswith(_CORE_PATHS) or path in above_cache or path == cache_dir
                or any(path == p or path.startswith(p + "/") for p in paths)
                or any(fnmatch.fnmatch(path, g) for g in globs)
                or any(path.startswith(root.rstrip("/") + "/") for root in roots if root)):
            continue
        missing.append(path)
    return missing


# -- registrations ------------------------------------------------------------------


def _call(fn: Any, available: dict[str, Any]) -> Any:
    """Call a hook implementation the way pluggy does: with the arguments it names."""
    names = [p for p in inspect.signature(fn).parameters if p in available]
    return fn(**{name: available[name] for name in names})


def check_registrations(module: Any) -> list[str]:
    """``register_engines`` and ``register_device_families`` register valid infos into a real Registry."""
    from pydantic import BaseModel

    from voxfit.engine import EngineInfo
    from voxfit.registry import DeviceFamilyInfo, Registry

    problems: list[str] = []
    registry = Registry()
    name = plugin_name(module)
    for attr, hook, fn, _ in hook_implementations(module):
        if hook not in ("register_engines", "register_device_families"):
            continue
        add = registry.add_engine if hook == "register_engines" else registry.add_family

        def register(info: Any, add: Any = add, attr: str = attr) -> None:
            try:
                add(info, name)
            except (TypeError, ValueError) as exc:
                problems.append(f"{attr}: {exc}")

        try:
            result = _call(fn, {"register": register})
        except Exception as exc:
            problems.append(f"{attr}: raised {_one_line(exc)}")
            continue
        if result is not None:
            problems.append(f"{attr}: returned {type(result).__name__}; registration hooks call register(...) "
                            "and return None")
    for info in registry.engines.values():
        assert isinstance(info, EngineInfo)
        where = f"engine {info.backend!r}"
        if not info.families:
            problems.append(f"{where}: runs no model family (families is empty)")
        for family in info.families:
            if not isinstance(family, str) or not family:
                problems.append(f"{where}: family {family!r} is not a name")
        if not info.description:
            problems.append(f"{where}: no description (users read it in `voxfit engines`)")
        if not isinstance(info.requires, tuple) or not all(isinstance(m, str) and m for m in info.requires):
            problems.append(f"{where}: requires must be a tuple of module names, got {info.requires!r}")
        module_path, sep, function = info.loader.partition(":")
        if not sep or not module_path or not function:
            problems.append(f"{where}: loader {info.loader!r} is not 'module:function' (other plugins load "
                            "the engine through it)")
        else:
            try:
                found = importlib.util.find_spec(module_path)
            except (ImportError, ValueError):
                found = None
            if found is None:
                problems.append(f"{where}: loader module {module_path!r} cannot be found")
        if info.options is not None:
            problems.extend(_options_problems(where, info.options, BaseModel))
    for family in registry.families.values():
        assert isinstance(family, DeviceFamilyInfo)
        if not family.description:
            problems.append(f"device family {family.name!r}: no description (users read it in `voxfit engines`)")
    return problems


def _options_problems(where: str, options: Any, base: type) -> list[str]:
    if not (isinstance(options, type) and issubclass(options, base)):
        return [f"{where}: options must be a pydantic model class, got {options!r}"]
    problems = []
    for field in options.model_fields:
        if not field.isidentifier() or field != field.lower():
            problems.append(f"{where}: option {field!r} is not a lowercase identifier (users type -O {field}=...)")
    try:
        options.model_validate({})
    except Exception as exc:
        problems.append(f"{where}: its options model cannot be built without options ({_one_line(exc)}); "
                        "every option needs a default: a run with no -O validates {}")
    return problems


# -- the light hooks, in a fresh process -------------------------------------------------


def check_light_hooks(
    module: Any,
    *,
    model: ModelArg = None,
    hardware: HardwareArg = None,
    settings: Any = None,
    with_plugins: Iterable[tuple[str, Any]] = (),
    heavy: Iterable[str] = HEAVY_MODULES,
    detect_seconds: float = DETECT_SECONDS,
) -> list[str]:
    """Import the plugin and call its planning hooks in a fresh process; check speed, imports, environ, types.

    ``model`` / ``hardware`` are what ``score_config`` is called with (resolved
    and detected through the real core when None). ``with_plugins`` are
    ``(name, module)`` pairs of plugins this one depends on (an engine plugin
    whose engine it places), besides the installed ones.
    """
    with _environ_kept():
        ctx = _Context.build(module, model=model, hardware=hardware, settings=settings, with_plugins=with_plugins)
        return ctx.problems + ctx.light_problems(list(heavy), detect_seconds)


# -- loading -------------------------------------------------------------------------------


def check_load(
    module: Any,
    *,
    model: ModelArg = None,
    hardware: HardwareArg = None,
    settings: Any = None,
    with_plugins: Iterable[tuple[str, Any]] = (),
    text: str = SAMPLE_TEXT,
    options: Optional[dict[str, Any]] = None,
) -> list[str]:
    """Plan through the real core, load the plugin's best feasible proposal, speak ``text``, check the audio.

    A :class:`~voxfit.engine.Configurable` engine is configured with its registered
    options model's defaults, then with ``options`` (voice options, e.g. a seed
    or a token cap that keeps a test short) if given, before it speaks.
    """
    with _environ_kept():
        ctx = _Context.build(module, model=model, hardware=hardware, settings=settings, with_plugins=with_plugins)
        return ctx.problems + ctx.load_problems(text, options)


# -- everything -------------------------------------------------------------------------------


def check_plugin(
    module: Any,
    *,
    model: ModelArg = None,
    hardware: HardwareArg = None,
    settings: Any = None,
    load: bool = True,
    with_plugins: Iterable[tuple[str, Any]] = (),
    heavy: Iterable[str] = HEAVY_MODULES,
    detect_seconds: float = DETECT_SECONDS,
    text: str = SAMPLE_TEXT,
    options: Optional[dict[str, Any]] = None,
) -> list[str]:
    """Every check above; the problems, one line each (empty: the plugin conforms)."""
    problems = (check_api_version(module) + check_hook_signatures(module) + check_plan_inputs(module)
                + check_registrations(module))
    with _environ_kept():  # the core applies prepare_env's changes while planning and loading: undo them after
        ctx = _Context.build(module, model=model, hardware=hardware, settings=settings, with_plugins=with_plugins)
        problems += ctx.problems
        if ctx.ready:
            problems += ctx.light_problems(list(heavy), detect_seconds)
            problems += ctx.plan_problems()
            if load:
                problems += ctx.load_problems(text, options)
    return _without_echoes(list(dict.fromkeys(problems)))


def _without_echoes(problems: list[str]) -> list[str]:
    """Drop what the core's guard recorded about a hook the kit already reported itself, in its own words."""
    marker = ": the core recorded: "
    own = [p for p in problems if marker not in p]

    def echoed(problem: str) -> bool:
        hook = problem.split(marker, 1)[0]
        return any(p.startswith(hook) or f"({hook})" in p.split(":", 1)[0] for p in own)

    return [p for p in problems if marker not in p or not echoed(p)]


def assert_conformant(module: Any, **kwargs: Any) -> None:
    """Raise ``AssertionError`` listing every problem :func:`check_plugin` finds (same keyword arguments)."""
    problems = check_plugin(module, **kwargs)
    if problems:
        name = getattr(module, "__name__", repr(module))
        raise AssertionError(f"plugin {name} does not conform ({len(problems)} problems):\n"
                             + "\n".join(f"  - {p}" for p in problems))


# -- internals ------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _Context:
    """A plugin host with the plugin (and the installed ones), the model and the hardware to check against."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.ready = False
        self.reference: Optional[str] = None  # what resolve_model is asked to recognise

    @classmethod
    def build(cls, module: Any, *, model: ModelArg, hardware: HardwareArg, settings: Any,
              with_plugins: Iterable[tuple[str, Any]]) -> "_Context":
        from voxfit.models import HardwareProfile, ModelSpec
        from voxfit.planning import planner
        from voxfit.planning.hardware import load_profile
        from voxfit.settings import Settings

        ctx = cls()
        ctx.module, ctx.name = module, plugin_name(module)
        ctx.settings = settings if settings is not None else Settings()
        ctx.with_plugins = list(with_plugins)
        ctx.host = _host(module, ctx.name, ctx.settings, ctx.with_plugins)
        info = next(i for i in ctx.host.infos if i.name == ctx.name)
        if info.status != "ok":
            ctx.problems.append(f"the core does not load it: {info.status}: {info.error}")
            return ctx
        try:
            if isinstance(hardware, HardwareProfile):
                ctx.hardware = hardware
            elif hardware is not None:
                ctx.hardware = load_profile(Path(hardware))
            else:
                ctx.hardware = planner.detect(ctx.host)
            if isinstance(model, ModelSpec):
                ctx.model = model
            elif model is not None:
                ctx.reference = str(model)
                ctx.model = ctx.host.resolve_model(ctx.reference)
            else:  # the plugin's own default model first: the one it is surely meant to run
                own, _ = ctx.host.call_owner("default_model", ctx.name, settings=ctx.settings)
                ctx.model = own if own is not None else ctx.host.resolve_model(None)
        except Exception as exc:
            ctx.problems.append(f"could not prepare the check: {_one_line(exc)}")
            return ctx
        ctx.problems.extend(ctx._recorded())
        ctx.ready = True
        return ctx

    def _recorded(self, since: int = 0) -> list[str]:
        return [f"{p.hook}: the core recorded: {p.error}" for p in self.host.problems[since:] if p.plugin == self.name]

    # -- light hooks --

    def light_problems(self, heavy: list[str], detect_seconds: float) -> list[str]:
        if not self.ready:
            return []
        if tuple(heavy) == HEAVY_MODULES:  # the default list: and whatever a registered engine needs
            required = (m.split(".")[0] for info in self.host.registry.engines.values() for m in info.requires)
            heavy = list(dict.fromkeys([*heavy, *required]))
        module_name = getattr(self.module, "__name__", "")
        spec = None
        try:
            spec = importlib.util.find_spec(module_name) if module_name else None
        except (ImportError, ValueError):
            pass
        if spec is None:
            return [f"module {module_name!r} cannot be imported by name, so its hooks cannot be checked in a fresh "
                    "process (write the plugin as a module file)"]
        others = self._others_proposals()
        payload = {
            "module": module_name, "heavy": heavy,
            "model": self.model.model_dump(mode="json"),
            "hardware": self.hardware.model_dump(mode="json"),
            "settings": self.settings.model_dump(mode="json"),
            "others": [p.model_dump(mode="json") for p in others],
            "reference": self.reference or (str(self.model.path) if self.model.path is not None else None),
            "with_plugins": [(n, m.__name__) for n, m in self.with_plugins if getattr(m, "__name__", None)],
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
        code = "import sys; from voxfit.testing.conformance import _child_main; _child_main(sys.stdin.read())"
        try:
            done = subprocess.run([sys.executable, "-c", code], input=json.dumps(payload), capture_output=True,
                                  text=True, env=env, timeout=_CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            return [f"importing the plugin and calling its planning hooks took over {_CHILD_TIMEOUT:.0f} s"]
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return [f"the fresh process checking the hooks failed: {tail}"]
        records = json.loads(done.stdout.strip().splitlines()[-1])
        return self._judge(records, heavy, detect_seconds, others)

    def _others_proposals(self) -> list[Any]:
        """Every other plugin's proposals, for a score_config wrapper to work on."""
        this = [plugin for n, plugin in self.host.pm.list_name_plugin() if n == self.name]
        caller = self.host.pm.subset_hook_caller("score_config", remove_plugins=this)
        try:
            return list(caller(model=self.model, hardware=self.hardware, settings=self.settings,
                               engines=self.host.registry))
        except Exception:
            return []

    def _judge(self, records: dict[str, Any], heavy: list[str], detect_seconds: float, others: list[Any]) -> list[str]:
        from voxfit.models import EnvChange, Proposal

        problems = []
        if records.get("import_error"):
            return [f"import failed in a fresh process: {records['import_error']}"]
        if records.get("import_heavy"):
            problems.append(f"importing the plugin imports {', '.join(records['import_heavy'])}: the core imports "
                            "every plugin to plan; import frameworks in load_engine")
        if records.get("import_env"):
            problems.append(f"importing the plugin changes os.environ ({', '.join(records['import_env'])})")
        own: list[Proposal] = []
        for call in records["calls"]:
            where = call["attr"] if call["attr"] == call["hook"] else f"{call['attr']} ({call['hook']})"
            if call.get("error"):
                problems.append(f"{where}: raised {call['error']}")
            if call.get("heavy"):
                problems.append(f"{where}: imports {', '.join(call['heavy'])} (never import a framework while the "
                                "core plans; do it in load_engine)")
            if call.get("env"):
                problems.append(f"{where}: changes os.environ ({', '.join(call['env'])}); describe changes with "
                                "prepare_env and let the core apply them")
            if call.get("invalid"):
                problems.append(f"{where}: returned the wrong type: {call['invalid']}")
            if call["hook"] in _PLANNING_HOOKS and records.get("declared") is not None:
                for read in _undeclared_reads(call.get("reads", {}), records["declared"], records["cache_dir"]):
                    problems.append(f"{where}: reads {read}, which plan_inputs does not declare (a remembered plan "
                                    "would be reused after it changed)")
            if call["hook"] == "detect" and call["seconds"] > detect_seconds:
                problems.append(f"{where}: took {call['seconds']:.2f} s (at most {detect_seconds:g} s: every "
                                "`voxfit plan` and `voxfit run` waits for it)")
            if call["hook"] == "score_config" and call.get("result") is not None:
                proposals = [Proposal.model_validate(p) for p in call["result"]]
                if call.get("wrapper"):
                    problems.extend(self._wrapper_problems(where, proposals, others))
                else:
                    own.extend(proposals)
            if call["hook"] == "prepare_env" and call.get("result") is not None:
                for change in (EnvChange.model_validate(c) for c in call["result"]):
                    if not change.reason.strip():
                        problems.append(f"{where}: environment change {change.describe()} has no reason")
        for proposal in own:
            problems.extend(self._proposal_problems(proposal))
        return problems

    def _wrapper_problems(self, where: str, returned: list[Any], given: list[Any]) -> list[str]:
        problems = []
        if len(returned) < len(given):
            problems.append(f"{where}: the wrapper dropped {len(given) - len(returned)} of the proposals it was "
                            "given (veto them with a reason instead)")
        owners = sorted({p.plugin for p in given})
        for p in returned:
            if p.plugin and p.plugin not in owners + [self.name]:
                problems.append(f"{where}: the wrapper changed a proposal's plugin to {p.plugin!r}")
        return problems

    def _proposal_problems(self, p: Any) -> list[str]:
        label = f"score_config proposal {p.engine} on {p.device or '?'}"
        problems = []
        if not any(r.strip() for r in p.reasons):
            problems.append(f"{label}: no reason (say why, in words a user reads in `voxfit plan`)")
        if not p.device:
            problems.append(f"{label}: no device id")
        if not p.device_family:
            problems.append(f"{label}: no device family")
        if not p.engine:
            problems.append(f"{label}: no engine")
        elif self.host.registry.engine(p.engine) is None:
            problems.append(f"{label}: engine {p.engine!r} is registered by no plugin (register it with "
                            "register_engines, or install the plugin that does)")
        if not math.isfinite(p.score) or p.score < 0:
            problems.append(f"{label}: score {p.score} is not a finite number >= 0")
        device = self.hardware.device(p.device) if p.device else None
        if p.device and p.device_family != "cpu" and device is None and not p.vetoes:
            problems.append(f"{label}: device {p.device!r} is not in the hardware profile")
        if device is not None and device.family != p.device_family:
            problems.append(f"{label}: device {p.device} is a {device.family} device, not {p.device_family}")
        return problems

    # -- planning through the core --

    def plan_problems(self) -> list[str]:
        from voxfit.planning.planner import make_plan

        before = len(self.host.problems)
        try:
            self.plan = make_plan(self.host, hardware=self.hardware, model=self.model)
        except Exception as exc:
            self.plan = None
            return [f"planning through the core failed: {_one_line(exc)}"]
        return self._recorded(before)

    # -- loading --

    def load_problems(self, text: str, options: Optional[dict[str, Any]] = None) -> list[str]:
        from voxfit.speaking.load import load_proposal

        if not self.ready:
            return []
        if getattr(self, "plan", None) is None:
            problems = self.plan_problems()
            if self.plan is None:
                return problems
        proposal, why_not = self._own_proposal()
        if proposal is None:
            return why_not
        saved = dict(os.environ)
        before = len(self.host.problems)
        try:
            try:
                loaded = load_proposal(self.host, self.plan, proposal, [])
            except Exception as exc:  # EngineLoadError, InvariantViolation, or the plugin's own
                return [f"load {proposal.label()}: {_one_line(exc)}"] + self._recorded(before)
            return self._engine_problems(loaded.engine, proposal, text, options) + self._recorded(before)
        finally:
            _restore_environ(saved)

    def _own_proposal(self) -> tuple[Optional[Any], list[str]]:
        """The plugin's best feasible proposal (its own, or one running its engine); else why none is loaded."""
        plan = self.plan
        own_engines = {b for b, info in self.host.registry.engines.items() if info.plugin == self.name}
        targets = [p for p in plan.ranked() if p.plugin == self.name or p.engine in own_engines]
        if targets:
            return targets[0], []
        loads = any(hook == "load_engine" for _, hook, _, _ in hook_implementations(self.module))
        if not loads and not own_engines:
            return None, []  # nothing of its own to load (a wrapper, a detector)
        mine = [r for r in plan.rejected if r.proposal.plugin == self.name or r.proposal.engine in own_engines]
        why = f" (vetoed: {'; '.join(mine[0].reasons)})" if mine else ""
        return None, [f"load: no feasible proposal of its own for {plan.model.name} here{why}; pass load=False "
                      "where its engine cannot run"]

    def _engine_problems(self, engine: Any, proposal: Any, text: str, options: Optional[dict[str, Any]]) -> list[str]:
        """What is wrong with a loaded engine: its type, invariants, rate, options, audio, metrics and notes."""
        from voxfit.engine import AudioChunk, Engine, HasNotes, ReportsMetrics
        from voxfit.speaking import invariants

        if not isinstance(engine, Engine):
            return [f"load {proposal.label()}: returned {type(engine).__name__}, not an Engine"]
        problems = [f"load {proposal.label()}: training artifact left: {v}"
                    for v in invariants.violations(engine.inference_modules())]
        try:
            rate = engine.sample_rate
            if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= 384000:
                problems.append(f"engine {engine.backend}: sample_rate {rate!r} is not a rate in Hz")
            problems += self._option_problems(engine, proposal, options)
            problems += _audio_problems(engine, text, AudioChunk)
            if isinstance(engine, ReportsMetrics):
                try:
                    json.dumps(engine.metrics())
                except Exception as exc:
                    problems.append(f"engine {engine.backend}: metrics() is not JSON data: {_one_line(exc)}")
            if isinstance(engine, HasNotes) and not all(isinstance(n, str) for n in engine.notes):
                problems.append(f"engine {engine.backend}: notes must be strings")
        finally:
            try:
                engine.close()
            except Exception as exc:
                problems.append(f"engine close() raised {_one_line(exc)}")
        return problems

    def _option_problems(self, engine: Any, proposal: Any, options: Optional[dict[str, Any]]) -> list[str]:
        from voxfit.engine import Configurable

        schema = self.host.registry.options_for(proposal.engine)
        if not (isinstance(engine, Configurable) and schema is not None):
            return [f"options {options} given, but engine {engine.backend} takes none"] if options else []
        problems = []
        for given in ({}, options) if options else ({},):
            try:
                engine.configure(schema.model_validate(given))
            except Exception as exc:
                problems.append(f"engine {engine.backend}: configure({given or 'its options defaults'}) "
                                f"raised {_one_line(exc)}")
        return problems


def _audio_problems(engine: Any, text: str, chunk_type: type) -> list[str]:
    where = f"engine {engine.backend}: synthesize({text!r})"
    try:
        chunks = list(itertools.islice(engine.synthesize(text), 10_000))
    except Exception as exc:
        return [f"{where} raised {_one_line(exc)}"]
    problems = []
    if not chunks:
        return [f"{where} yielded no audio chunk"]
    pcm = bytearray()
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, chunk_type):
            problems.append(f"{where}: chunk {i} is a {type(chunk).__name__}, not an AudioChunk")
            continue
        if not isinstance(chunk.pcm, (bytes, bytearray)):
            problems.append(f"{where}: chunk {i} pcm is {type(chunk.pcm).__name__}, not bytes")
            continue
        if len(chunk.pcm) % 2:
            problems.append(f"{where}: chunk {i} has {len(chunk.pcm)} bytes, an odd length "
                            "(16-bit PCM has 2 bytes per sample)")
        if chunk.sample_rate != engine.sample_rate:
            problems.append(f"{where}: chunk {i} is at {chunk.sample_rate} Hz, the engine says {engine.sample_rate}")
        pcm += chunk.pcm
    if not problems:
        if not pcm:
            problems.append(f"{where}: no samples")
        elif not pcm.strip(b"\x00"):
            problems.append(f"{where}: every sample is zero (silence)")
    return problems


@contextlib.contextmanager
def _environ_kept() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        _restore_environ(saved)


def _restore_environ(saved: dict[str, str]) -> None:
    for key in [k for k in os.environ if k not in saved]:
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _host(module: Any, name: str, settings: Any, with_plugins: list[tuple[str, Any]]) -> Any:
    """The core's plugin host with every installed plugin, ``with_plugins`` and ``module`` (once, as ``name``)."""
    from voxfit.plugins import PluginHost, entry_points

    module_name = getattr(module, "__name__", None)
    extra = [(n, m) for n, m in with_plugins if n != name]
    skip = {name, *(n for n, _ in extra)}
    host = PluginHost(settings)
    host.add_entry_points(ep for ep in entry_points() if ep.name not in skip and ep.value != module_name)
    for extra_name, obj in extra:
        host.add_entry_point(extra_name, lambda obj=obj: obj, None, None)
    host.add_entry_point(name, lambda: module, None, None)
    return host


# -- the fresh process -------------------------------------------------------------------------------


def _child_main(raw: str) -> None:
    """Run in a fresh interpreter: import the plugin and call its planning hooks, watching modules and environ."""
    payload = json.loads(raw)
    modules, environ = set(sys.modules), dict(os.environ)
    try:
        module = importlib.import_module(payload["module"])
    except BaseException as exc:
        print(json.dumps({"calls": [], "import_error": _one_line(exc)}))
        return
    child = _ChildCheck(payload, module)
    child.out["import_heavy"], child.out["import_env"] = child.heavy_new(modules), _env_diff(environ)
    child.run()
    print(json.dumps(child.out))


def _env_diff(before: dict[str, str]) -> list[str]:
    after = dict(os.environ)
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


class _ChildCheck:
    """The fresh process's side of :func:`check_light_hooks`: each light hook called as the core would."""

    def __init__(self, payload: dict[str, Any], module: Any) -> None:
        from pydantic import TypeAdapter

        from voxfit.models import Detection, EnvChange, HardwareProfile, ModelSpec, PlanInputs, Proposal
        from voxfit.settings import Settings

        self.payload, self.module, self.heavy = payload, module, set(payload["heavy"])
        self.settings = Settings(**payload["settings"])
        self.model = ModelSpec.model_validate(payload["model"])
        self.hardware = HardwareProfile.model_validate(payload["hardware"])
        self.others = [Proposal.model_validate(p) for p in payload["others"]]
        self.own: list[Any] = []
        self.out: dict[str, Any] = {"calls": [], "cache_dir": str(Path(self.settings.cache_dir).absolute())}
        self.validators = {
            "detect": TypeAdapter(Optional[Detection]),
            "score_config": TypeAdapter(Optional[list[Proposal]]),
            "prepare_env": TypeAdapter(Optional[list[EnvChange]]),
            "resolve_model": TypeAdapter(Optional[ModelSpec]),
            "default_model": TypeAdapter(Optional[ModelSpec]),
            "plan_inputs": TypeAdapter(Optional[PlanInputs]),
        }

    def heavy_new(self, before: set[str]) -> list[str]:
        return sorted({m.split(".")[0] for m in set(sys.modules) - before} & self.heavy)

    def run(self) -> None:
        impls = [i for i in hook_implementations(self.module) if i[1] in _LIGHT_HOOKS]
        # score_config before prepare_env: prepare_env is called with the plugin's own proposals too.
        order = {hook: i for i, hook in enumerate(_LIGHT_HOOKS)}
        for attr, hook, fn, opts in sorted(impls, key=lambda i: (order[i[1]], _is_wrapper(i[3]))):
            for kwargs in self._calls(hook):
                self.out["calls"].append(self._record(attr, hook, fn, _is_wrapper(opts), kwargs))

    def _engines(self) -> Any:
        """The engines every installed plugin registers, as score_config receives them from the core."""
        name = plugin_name(self.module)
        extra = [(n, importlib.import_module(m)) for n, m in self.payload.get("with_plugins", [])]
        return _host(self.module, name, self.settings, extra).registry

    def _calls(self, hook: str) -> list[dict[str, Any]]:
        from voxfit.planning.hardware import detect_host
        from voxfit.registry import Registry

        available: dict[str, Any] = {"settings": self.settings, "model": self.model, "hardware": self.hardware}
        if hook == "detect":
            return [{**available, "host": detect_host()}]
        if hook == "score_config":
            return [{**available, "engines": self._engines()}]
        if hook in ("register_engines", "register_device_families"):
            registry = Registry()
            add = registry.add_engine if hook == "register_engines" else registry.add_family
            return [{**available, "register": lambda info: add(info, "conformance")}]
        if hook == "resolve_model":
            reference = self.payload["reference"]
            return [] if reference is None else [{**available, "reference": reference}]
        if hook == "prepare_env":
            return [{**available, "proposal": proposal} for proposal in (self.own + self.others)[:40]]
        return [available]

    def _record(self, attr: str, hook: str, fn: Any, wrapper: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {"attr": attr, "hook": hook, "wrapper": wrapper}
        modules, environ = set(sys.modules), dict(os.environ)
        started = time.perf_counter()
        result = None
        tracer = _ReadTracer() if hook in _PLANNING_HOOKS else contextlib.nullcontext()
        try:
            with tracer:
                result = _call_hook(fn, kwargs, wrapper, list(self.others) + list(self.own), record)
        except BaseException as exc:
            record["error"] = _one_line(exc)
        if isinstance(tracer, _ReadTracer):
            record["reads"] = tracer.reads()
        record["seconds"] = time.perf_counter() - started
        record["heavy"], record["env"] = self.heavy_new(modules), _env_diff(environ)
        _restore_environ(environ)
        if "error" not in record:
            self._check_result(hook, wrapper, result, record)
        return record

    def _check_result(self, hook: str, wrapper: bool, result: Any, record: dict[str, Any]) -> None:
        if hook in ("register_engines", "register_device_families"):
            if result is not None:
                record["invalid"] = f"returned {type(result).__name__} (registration hooks return None)"
            return
        if hook not in self.validators:
            return
        try:
            checked = self.validators[hook].validate_python(result)
        except Exception as exc:
            detail = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
            record["invalid"] = f"{type(result).__name__}: {detail}"
            return
        if hook == "plan_inputs" and checked is not None:
            self.out["declared"] = checked.model_dump(mode="json")
        if checked is not None and hook in ("score_config", "prepare_env"):
            record["result"] = [item.model_dump(mode="json") for item in checked]
            if hook == "score_config" and not wrapper:
                self.own.extend(checked)


def _is_wrapper(opts: dict[str, Any]) -> bool:
    return bool(opts.get("wrapper") or opts.get("hookwrapper"))


def _call_hook(fn: Any, kwargs: dict[str, Any], wrapper: bool, proposals: list[Any], record: dict[str, Any]) -> Any:
    """Call one implementation as pluggy would: a wrapper gets ``proposals`` as what the inner hooks returned."""
    if not wrapper:
        return _call(fn, kwargs)
    gen = _call(fn, kwargs)
    next(gen)
    try:
        gen.send(proposals)
    except StopIteration as stop:
        return stop.value
    record["invalid"] = "the wrapper yielded more than once"
    return None


class _ReadTracer:
    """Records the environment variables read (``os.environ[...]``, ``.get``, ``in``) and the files and
    directories opened (Python's audit events) while a planning hook runs in the fresh process."""

    _hooked = False
    _active: Optional["_ReadTracer"] = None

    def __init__(self) -> None:
        self._environ: list[str] = []
        self._paths: list[str] = []

    def __enter__(self) -> "_ReadTracer":
        cls = type(self)
        if not cls._hooked:
            sys.addaudithook(cls._audit)  # audit hooks cannot be removed: one for the process, routed to _active
            original = type(os.environ).__getitem__

            def getitem(environ: Any, key: Any) -> Any:
                if cls._active is not None and environ is os.environ:
                    cls._active._environ.append(str(key))
                return original(environ, key)

            type(os.environ).__getitem__ = getitem  # type: ignore[method-assign]
            cls._hooked = True
        cls._active = self
        return self

    def __exit__(self, *exc: Any) -> None:
        type(self)._active = None

    @classmethod
    def _audit(cls, event: str, args: tuple[Any, ...]) -> None:
        tracer = cls._active
        if tracer is None or event not in ("open", "os.listdir", "os.scandir", "glob.glob"):
            return
        path = args[0] if args else None
        if isinstance(path, (str, bytes, os.PathLike)) and not isinstance(path, int):
            name = os.fsdecode(path)
            if name and not name.endswith((".py", ".pyc", ".so", ".pth")):
                tracer._paths.append(os.path.abspath(name))

    def reads(self) -> dict[str, list[str]]:
        # Reading every variable is copying the environment (a subprocess call), not depending on each one.
        environ = sorted(set(self._environ))
        if len(environ) > len(os.environ) // 2 + 5:
            environ = []
        return {"environ": environ, "paths": sorted(set(self._paths))}

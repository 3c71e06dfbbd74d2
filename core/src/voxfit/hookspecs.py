"""The hook contracts between the core and hardware plugins.

A plugin is a module (found through the ``voxfit`` entry-point group) that
declares ``VOXFIT_HOOK_API`` (the version it was built for, at most
:data:`HOOK_API_VERSION`) and implements any of the hooks below with
the ``@voxfit.sdk.hookimpl`` marker. Registration hooks run once, when the core
builds its registries; then, for one run:

    register_engines, register_device_families        (once per process)
    plan_inputs                                       (when a plan is remembered)
    detect -> resolve_model | default_model -> score_config -> (core ranks)
           -> prepare_env -> load_engine (owner only)
           -> disable_training_artifacts -> (core checks invariants)

The core's own engines (``voxfit.engines``) and every first-party plugin use these
same hooks: there is no private road.

Rules every implementation follows:

* Accept only the arguments you need: pluggy passes them by name.
* Never import torch, onnxruntime or another heavy framework in ``detect``,
  ``score_config`` or ``prepare_env``; ``voxfit plan`` must stay fast. Import
  them in ``load_engine``.
* Return the documented type or ``None``. The core validates every result: a
  hook that raises or returns something else has its contribution dropped and
  reported (``voxfit plugins``, ``voxfit plan``), and the run goes on with the
  other plugins. ``--strict`` turns that into an error, for plugin authors.
* Every decision carries a reason a person can read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import pluggy

if TYPE_CHECKING:
    from voxfit.engine import Engine, EngineInfo
    from voxfit.models import Detection, EnvChange, HardwareProfile, ModelSpec, PlanInputs, Proposal
    from voxfit.registry import DeviceFamilyInfo, Registry
    from voxfit.settings import Settings

PROJECT = "voxfit"

#: Version of the hook contracts below. A plugin declares the version it was
#: built for as ``VOXFIT_HOOK_API``. The rules: a new optional hook or argument
#: bumps the minor version; a changed contract bumps the major. The core
#: refuses a plugin of another major version, and one built for a newer minor
#: version than the core speaks (it may rely on hooks this core lacks), each
#: with a message that says what to do.
#:
#: 2.0 (from 1.0): engines, model formats and device families are contributed
#: through ``register_engines``, ``register_device_families``, ``resolve_model``
#: and ``default_model``; ``load_engine`` is called on the proposal's owner only;
#: an engine's voice options are a typed model (``EngineInfo.options``).
#:
#: 2.1: the optional ``plan_inputs`` hook names what ``detect``, ``score_config``
#: and ``prepare_env`` read beyond their arguments; a remembered plan is reused
#: only while those read the same. ``score_config`` also receives ``engines``
#: (engines declare their decoding speed per device family and their pacing).
HOOK_API_VERSION = "2.1"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_engines(register: Callable[[EngineInfo], None]) -> None:
    """Register the engine backends your plugin provides.

    Called once when the core builds its engine registry (before any plan).
    Call ``register(EngineInfo(...))`` once per backend: its name, the model
    families it runs, the Python modules it needs, its typed voice options and
    where its loader lives (``"module:function"``, imported only when a proposal
    using it is loaded). The ranking vetoes a proposal whose engine nobody
    registered, or that does not run the model's family, or whose modules are
    missing: the same checks for every engine, first-party or not.

    :return: nothing: call ``register`` instead. A backend name registered
        twice is kept from the first plugin and the second registration is
        reported as a problem.

    Never import the engine's framework here.
    """


@hookspec
def register_device_families(register: Callable[[DeviceFamilyInfo], None]) -> None:
    """Register the device families your plugin knows (``"cuda"``, ``"rocm"``, ``"npu"``...).

    Called once, like :func:`register_engines`. Registered families are what
    ``--device`` / ``VOXFIT_DEVICE`` accept besides ``auto`` (a family reported
    by a device in the hardware profile is accepted too), so a third party's
    ``--device rocm`` is a hard lock like any other. Call
    ``register(DeviceFamilyInfo(name=..., description=...))``; add
    ``cluster_resource="GPU"`` (or a custom resource name) when a replica
    running on one device of the family must hold that cluster-scheduler
    resource (Ray's vocabulary); leave it None for a family that needs only
    CPUs. ``voxfit cluster`` and Ray replicas size their requests from it.

    :return: nothing: call ``register`` instead. Never probe hardware here
        (that is ``detect``'s job): a family is registered whether or not a
        device of it is present.
    """


@hookspec(firstresult=True)
def resolve_model(reference: str, settings: Settings) -> Optional[ModelSpec]:
    """Recognise a model the user named (``--model`` / ``VOXFIT_MODEL``) in your format.

    Called in turn on every plugin until one returns a spec.

    :param reference: what the user typed, usually a path (may not exist:
        your format may name models otherwise).
    :return: a :class:`~voxfit.models.ModelSpec` (family, files, parameter
        count, memory per precision...) read from small files only, or
        ``None`` when it is not yours.

    Never load weights or import a framework here: plans must stay fast. A
    model directory is data: never execute or import anything found in it.
    Raise :class:`voxfit.errors.ModelError` (one line) when the reference is
    yours but broken (a missing weights file, an invalid config).
    """


@hookspec(firstresult=True)
def default_model(settings: Settings) -> Optional[ModelSpec]:
    """The model to run when the user named none.

    Called once per plan when ``--model`` / ``VOXFIT_MODEL`` is unset, in turn
    on every plugin until one answers; a demo or fallback default should be
    declared ``@hookimpl(trylast=True)`` so that a real voice comes first.

    :return: a :class:`~voxfit.models.ModelSpec` (an engine that needs no model
        file answers with a spec that has no ``path``), or ``None``.

    Never download anything here: a default model ships with the plugin.
    """


@hookspec
def detect(host: HardwareProfile, settings: Settings) -> Optional[Detection]:
    """Report the devices of your hardware family that are present.

    Called once per run (not at all when a saved profile is given with
    ``--hardware``), before any model is resolved.

    :param host: what the core already knows: OS, architecture, CPU model,
        core counts, ISA flags, memory. ``host.devices`` is empty.
    :param settings: the run's settings (read only).
    :return: a :class:`~voxfit.models.Detection` with your devices (ids unique,
        e.g. ``"cuda:0"``), machine-wide flags (``{"wsl": "wsl2"}``) and notes;
        or ``None`` when your hardware is absent.

    Must be fast and side-effect free. Use the lightest probe there is (NVML
    rather than torch, ``sysctl`` rather than a framework). Absent hardware,
    missing drivers or a failing probe are not errors: return ``None`` or a
    note. Never change the environment here.
    """


@hookspec
def plan_inputs(settings: Settings) -> Optional[PlanInputs]:
    """Name everything your ``detect``, ``score_config`` and ``prepare_env`` read beyond their arguments.

    voxfit remembers a plan (``<cache dir>/plans``) and reuses it while nothing
    it depends on changed. The core knows its own inputs: every ``VOXFIT_*``
    setting and option, the installed packages and the source files of every
    loaded plugin, the model's files, the CPU, memory and CPU load, the tune
    measurements. It cannot know what your hooks look at: the environment
    variables, device nodes and driver files. Declare them here, and a plan
    made while they read one way is never reused once they read another (a
    GPU hidden by ``CUDA_VISIBLE_DEVICES=`` and shown again, a device node
    that appears when a container starts with the device).

    Called when a plan is stored, on every loaded plugin. Reading an input is
    the core's job: at store time and again before every reuse it compares,
    for each environment variable, its value; for each path, whether it
    exists, its type, owner and permissions, what device a device node is, a
    directory's entries and a small file's content; for each glob, the paths
    that match. A declared input that cannot be read (permission denied) means
    the plan is made afresh.

    :return: a :class:`~voxfit.models.PlanInputs`, empty when your hooks read
        nothing but their arguments; ``None`` means "not declared".

    A plugin that implements ``detect`` and declares nothing here makes every
    plan unrememberable while it is loaded: the core cannot tell when its
    hardware changed. Never read the inputs here, and never import a
    framework: only name them.
    """


@hookspec
def score_config(model: ModelSpec, hardware: HardwareProfile, settings: Settings,
                 engines: Registry) -> Optional[list[Proposal]]:
    """Propose ways to run ``model`` on the devices of your family.

    Called once per plan, after detection, with the merged profile of all
    plugins (or a saved one) and the engine registry: an engine's decoding
    speed on your family is ``engines.calibration_for(backend, family)``
    (registered with the engine, for :func:`voxfit.sdk.decode_speed`).

    :return: zero or more :class:`~voxfit.models.Proposal`. Each names the
        device id, engine backend, precision, quantization, compile, threads,
        an estimate (RTF, peak memory, tokens/s) and a ``score`` on the shared
        scale (about 1 / estimated RTF, reduced for risk), with ``reasons``.
        Put your own hard objections in ``vetoes`` rather than leaving the
        proposal out, so the user sees what was considered. The core stamps
        ``plugin`` with your name.

    Never drop a proposal because another plugin's looks better: ranking is
    the core's job. The core vetoes on its own what does not fit (device lock, memory with
    headroom, missing runtime modules, unsupported model family); you need not
    repeat those checks.

    A ``wrapper=True`` implementation may adjust other plugins' proposals::

        @hookimpl(wrapper=True)
        def score_config(hardware):
            proposals = yield
            ...  # change, add or annotate, with reasons
            return proposals

    The wrapper receives the flat list of all plugins' proposals and returns
    the list to rank. It must keep every proposal's ``plugin`` unchanged.
    """


@hookspec
def prepare_env(proposal: Proposal, hardware: HardwareProfile, settings: Settings) -> Optional[list[EnvChange]]:
    """Describe the process changes the chosen proposal needs before loading.

    Called for the chosen proposal at plan time (the changes are shown in the
    plan) and applied by the core before ``load_engine``, i.e. before torch
    or onnxruntime is imported. Called for every plugin, not only the owner:
    a CUDA plugin hides the GPUs when a CPU proposal was chosen.

    :return: a list of :class:`~voxfit.models.EnvChange` (environment
        variables, ``PATH``-like prepends, multiprocessing start method), each
        with a reason; or ``None``.

    Never modify ``os.environ`` or global state yourself; the core applies
    and records every change so the user can see it.
    """


@hookspec(firstresult=True)
def load_engine(proposal: Proposal, model: ModelSpec, settings: Settings, engines: Registry) -> Optional[Engine]:
    """Load the engine for a proposal you own.

    Called on the proposal's owner only (``proposal.plugin``), for the chosen
    proposal; if loading fails, for the next ranked one. An engine another
    plugin registered is built with ``engines.loader(proposal.engine)(...)``
    (its signature is documented by the plugin that registered it).

    :return: an object satisfying :class:`voxfit.engine.Engine`, placed on the
        proposal's device with its precision, quantization and compile
        setting. Choose the device here, once: a loaded model is never moved.
        ``None`` means "I cannot load this" and is reported as a failed load.

    Raise :class:`voxfit.errors.EngineLoadError` (or let the framework's error
    out, e.g. out of memory) when loading fails: the core records the reason
    and falls back to the next proposal. Heavy imports belong here.
    """


@hookspec
def disable_training_artifacts(engine: Engine) -> Optional[list[str]]:
    """Switch off everything only training needs, on a loaded engine.

    Called for every plugin after ``load_engine``, whoever loaded it. Turn
    off train mode and dropout, gradient tracking, gradient checkpointing
    and weight-norm parametrizations you know how to remove. Ignore engines
    you do not understand.

    :return: the actions taken, one human-readable line each, or ``None``.

    The core then checks the invariants itself on ``engine.inference_modules()``
    and refuses to run an engine that still carries one, whatever the hooks
    said. Never load, move or replace the engine here.
    """

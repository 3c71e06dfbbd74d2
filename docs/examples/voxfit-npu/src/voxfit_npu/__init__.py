"""A hardware plugin for a device family voxfit has never heard of: "npu".

This is a DEMO: there is no NPU driver behind it. ``detect`` reports a fake
device ``npu:0`` when the environment variable ``DEMO_NPU_FAKE=1`` is set,
and nothing otherwise. It shows every step a real hardware plugin takes:
register the family, detect the devices cheaply, propose how to run a model
on them (with reasons), describe the process changes, and load an engine
another plugin registered (the beep engine of ``voxfit-beep``) on its device.
It imports nothing from the core but ``voxfit.sdk``.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from voxfit.sdk import (
    AcceleratorDevice,
    Detection,
    DeviceFamilyInfo,
    EngineLoadError,
    EnvChange,
    Estimate,
    HardwareProfile,
    ModelSpec,
    PlanInputs,
    Proposal,
    ProposalFacts,
    Registry,
    hookimpl,
)


class NpuFacts(ProposalFacts):
    """What this plugin's proposals tell other plugins, typed (declared below as PROPOSAL_FACTS)."""

    npu_offload: bool = False  # the work runs on the NPU, leaving the CPU free


VOXFIT_HOOK_API = "2.1"
NAME = "npu"  # must match the entry-point name
PROPOSAL_FACTS = NpuFacts
FAMILY = "npu"
FAKE_ENV = "DEMO_NPU_FAKE"  # demo only: pretend an NPU is present
RUNS = {"beep": "beep"}  # model family -> the engine this NPU runs it with


@hookimpl
def register_device_families(register: Callable[[DeviceFamilyInfo], None]) -> None:
    register(DeviceFamilyInfo(name=FAMILY, description=f"neural processing units (a demo: {FAKE_ENV}=1 fakes one)"))


@hookimpl
def plan_inputs() -> PlanInputs:
    # Everything detect and prepare_env read besides their arguments: a plan made while these read one way is
    # never reused once they read another (an NPU that appears, a driver update).
    return PlanInputs(environ=[FAKE_ENV], paths=["/sys/class/npu"], globs=["/dev/npu*"])


@hookimpl
def detect() -> Optional[Detection]:
    # A real plugin asks its driver here, cheaply (no framework import).
    if os.environ.get(FAKE_ENV) != "1":
        return Detection(notes=[f"no NPU found (this demo plugin fakes one when {FAKE_ENV}=1)"])
    device = AcceleratorDevice(
        id="npu:0",
        family=FAMILY,
        name="Demo NPU (fake)",
        memory_total_bytes=2 << 30,
        memory_free_bytes=2 << 30,
        capabilities={"fake": True, "int8": True},
    )
    return Detection(devices=[device], notes=[f"npu:0 is a demo device ({FAKE_ENV}=1)"])


@hookimpl
def score_config(model: ModelSpec, hardware: HardwareProfile) -> Optional[list[Proposal]]:
    engine = RUNS.get(model.family)
    if engine is None:
        return None  # nothing this NPU can run
    proposals = []
    for device in hardware.devices:
        if device.family != FAMILY:
            continue
        busy = "busy" in device.flags  # a device another process uses: slower, and the plan should say so
        factors = {"busy_npu": 0.4} if busy else {}
        proposals.append(Proposal(
            device=device.id,
            device_family=FAMILY,
            engine=engine,  # registered by another plugin: the core vetoes this if it is not installed
            precision="n/a",
            memory_pool="device",
            estimate=Estimate(rtf=0.005, peak_memory_bytes=1 << 20),
            score=200.0 * factors.get("busy_npu", 1.0),  # 1 / RTF: twice the CPU beeper's speed, unless busy
            score_factors=factors,  # the named multipliers behind the score
            facts=NpuFacts(npu_offload=True),  # for other plugins to read, instead of parsing reasons
            reasons=[f"runs the {engine} engine on {device.name}, leaving the CPU free"]
            + (["the NPU is busy with another process: score x0.4"] if busy else []),
        ))
    return proposals


@hookimpl
def prepare_env(proposal: Proposal) -> Optional[list[EnvChange]]:
    if proposal.device_family != FAMILY:
        return None
    index = proposal.device.partition(":")[2] or "0"
    return [EnvChange(kind="set_env", key="DEMO_NPU_VISIBLE_DEVICES", value=index,
                      reason=f"the NPU runtime sees only {proposal.device}, the device this plan chose")]


@hookimpl
def load_engine(proposal: Proposal, model: ModelSpec, engines: Registry) -> object:
    # Called for this plugin's own proposals only; the engine belongs to its plugin.
    try:
        load = engines.loader(proposal.engine)
    except LookupError as exc:
        raise EngineLoadError(str(exc)) from None
    return load(model, device=proposal.device)

"""Process environment for the chosen proposal, described (never applied) before torch is imported.

CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when the first CUDA call of the
process initialises the driver; after that, changing it does nothing. So the
only reliable way to keep a process off the GPUs, or on one GPU, is to set it
before torch is imported, which is exactly when the core applies these
changes. docs/field-notes.md: a user's ``DEVICE=cpu`` was ignored because later code
re-detected CUDA; hiding the GPUs first was the only thing that stuck.
"""

from __future__ import annotations

from typing import Mapping

from voxfit.sdk import EnvChange, HardwareProfile, Proposal, Settings

from .proposal_options import CudaOptions, cuda_options

PLUGIN = "cuda"
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
EXPANDABLE = "expandable_segments:True"


def _hide_all(reason: str) -> EnvChange:
    return EnvChange(kind="set_env", key="CUDA_VISIBLE_DEVICES", value="", reason=reason)


def _nvidia_present(hardware: HardwareProfile) -> bool:
    # A failed NVML does not mean CUDA fails too: torch may still find the GPU NVML could not read.
    return any(d.family == "cuda" for d in hardware.devices) or "nvml" in hardware.flags


def _alloc_conf(environ: Mapping[str, str]) -> str:
    current = environ.get(ALLOC_CONF, "").strip()
    if "expandable_segments" in current:
        return current  # the user decided already, either way
    return f"{current},{EXPANDABLE}" if current else EXPANDABLE


def env_changes(proposal: Proposal, hardware: HardwareProfile, settings: Settings,
                environ: Mapping[str, str]) -> list[EnvChange]:
    if settings.device == "cpu":
        return [_hide_all("device locked to cpu (--device / VOXFIT_DEVICE): every NVIDIA GPU is hidden before "
                          "torch is imported, so no later code can re-detect CUDA and use it")]
    if proposal.device_family != "cuda":
        if not _nvidia_present(hardware):
            return []
        return [_hide_all(f"the chosen proposal runs on {proposal.device_family}: NVIDIA GPUs are hidden so "
                          "nothing re-detects CUDA and puts tensors there behind the plan's back")]
    if proposal.plugin != PLUGIN:
        return []  # another plugin's CUDA proposal: its owner prepares it
    device = hardware.device(proposal.device)
    gpu = cuda_options(proposal)
    uuid = gpu.uuid or (str(device.capabilities.get("uuid", "")) if device else "")
    index = gpu.nvml_index if isinstance(proposal.options, CudaOptions) or device is None else device.index
    target = uuid or str(index)
    how = f"by UUID {uuid}" if uuid else f"by nvidia-smi index {index}"
    return [
        EnvChange(kind="set_env", key="CUDA_DEVICE_ORDER", value="PCI_BUS_ID",
                  reason="number GPUs as nvidia-smi and NVML do, not fastest-first"),
        EnvChange(kind="set_env", key="CUDA_VISIBLE_DEVICES", value=target,
                  reason=f"only {proposal.device} is visible ({how}); inside the process it is cuda:0, and no "
                         "other GPU can be picked up by code that re-detects devices"),
        EnvChange(kind="set_env", key=ALLOC_CONF, value=_alloc_conf(environ),
                  reason="expandable segments let the caching allocator grow blocks in place instead of "
                         "fragmenting, which matters when the model nearly fills the GPU"),
    ]

"""Which GPU a proposal of this plugin runs on, as its load reads it (this plugin's PROPOSAL_OPTIONS)."""

from __future__ import annotations

from pydantic import ConfigDict, Field
from voxfit.sdk import Proposal, ProposalOptions


class CudaOptions(ProposalOptions):
    """The GPU by its NVML identity: its UUID (stable across reboots and renumbering) and nvidia-smi index."""

    model_config = ConfigDict(extra="forbid")

    uuid: str = Field(default="", description="The GPU's UUID as NVML reports it ('' when unknown).")
    nvml_index: int = Field(default=0, ge=0, description="The GPU's nvidia-smi (PCI bus) index.")


def cuda_options(proposal: Proposal) -> CudaOptions:
    """A proposal's GPU identity (defaults for a CUDA proposal another plugin made)."""
    options = proposal.options
    return options if isinstance(options, CudaOptions) else CudaOptions()

"""How a proposal of this plugin decodes audio on a Mac (this plugin's PROPOSAL_OPTIONS)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import ConfigDict, Field
from voxfit.sdk import ProposalOptions


class MpsOptions(ProposalOptions):
    model_config = ConfigDict(extra="forbid")

    codec_backend: Optional[Literal["coreml"]] = Field(
        default=None, description="coreml: the codec decoder runs as a Core ML ML program.")
    coreml_compute_units: Literal["ALL", "CPU_AND_GPU", "CPU_AND_NE", "CPU_ONLY"] = "ALL"

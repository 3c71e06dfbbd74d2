"""How this plugin loads its proposals: the typed options it gives each one (its PROPOSAL_OPTIONS)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import ConfigDict, Field
from voxfit.sdk import ProposalOptions


class CpuOptions(ProposalOptions):
    """ONNX Runtime session options for a voice, or which codec decoder a Fish Speech proposal uses."""

    model_config = ConfigDict(extra="forbid")

    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    inter_op_threads: Optional[int] = Field(default=None, ge=1, description="Inter-op threads (parallel mode only).")
    enable_mem_reuse: Optional[bool] = Field(default=None, description="Plan buffer reuse at session start.")
    enable_cpu_mem_arena: Optional[bool] = None
    enable_mem_pattern: Optional[bool] = None
    allow_spinning: Optional[bool] = Field(default=None, description="Intra-op worker threads spin while waiting.")
    shrink_arena: bool = Field(
        default=True, description="Give the memory arena's growth back after each run, so one long sentence "
        "does not hold its activations' memory for the life of the process.")
    cache_optimized_graph: bool = Field(
        default=False, description="Optimise the graph for this CPU once and cache it on disk.")
    codec_backend: Optional[Literal["torch", "onnx"]] = Field(
        default=None, description="Fish Speech proposals: the codec decoder's runtime.")

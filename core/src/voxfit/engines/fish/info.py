"""What the core knows about the Fish Speech engines before loading one: names, voice options, how to install."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

# fish-speech itself cannot be installed through an extra (its declared dependencies
# do not resolve), so the hint names the whole command; the README explains it.
INSTALL_HINT = (
    "pip install 'voxfit[fish]' && pip install --no-deps fish-speech==0.1.0 descript-audiotools==0.7.2 "
    "descript-audio-codec==1.0.0 librosa==0.11.0 tensorboard==2.21.0"
)
BACKENDS = ("fish-torch", "fish-torch+onnx-codec")
LOADER = "voxfit.engines.fish.engine:load_fish_engine"


class FishOptions(BaseModel):
    """Voice options of the Fish Speech engines (``voxfit run`` flags, ``-O key=value``, the server)."""

    model_config = ConfigDict(extra="forbid")

    reference_audio: Optional[Path] = Field(default=None, description="A 5-10 s clip of the voice to clone.")
    reference_text: Optional[str] = Field(default=None, max_length=2000, description="What the reference clip says.")
    # The seeds torch.manual_seed takes (a signed or unsigned 64-bit integer); past them it raises.
    seed: Optional[int] = Field(default=None, ge=-(2**63), le=2**64 - 1, description="Sampling seed, for repeatable output.")
    max_new_tokens: Optional[int] = Field(default=None, ge=1, le=32768, description="Cap of semantic tokens per sentence.")
    temperature: Optional[float] = Field(default=None, gt=0.0, le=2.0, description="Sampling temperature.")
    top_p: Optional[float] = Field(default=None, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    repetition_penalty: Optional[float] = Field(default=None, ge=1.0, le=2.0, description="Penalty for repeats.")

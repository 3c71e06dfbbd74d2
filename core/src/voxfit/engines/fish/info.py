"""What the core knows about the Fish Speech engines before loading one: names, voice options, how to install."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voxfit.sdk import DecodeCalibration

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

    @field_validator("reference_audio")
    @classmethod
    def _clip_exists(cls, path: Optional[Path]) -> Optional[Path]:
        # Checked here, before anything is loaded: a typo is one line, not a failure minutes later.
        if path is not None and not path.expanduser().is_file():
            raise ValueError(f"reference audio not found: {path}")
        return path

    @model_validator(mode="after")
    def _text_needs_its_clip(self) -> "FishOptions":
        if self.reference_text is not None and self.reference_audio is None:
            raise ValueError("reference_text needs reference_audio (the clip it transcribes)")
        return self


#: fish-speech's decoding speed per device family, for the shared roofline (``voxfit.sdk.decode_speed``).
#: Change these only with evidence, and say where it came from: every plan that uses them shows the source.
DECODE = {
    # fish-speech's eager loop on an NVIDIA GPU. The field notes' RTX 3060 ran S1-mini in fp16 at RTF 2-3
    # (7-11 tokens/s) although its 360 GB/s would stream the weights ~150 times a second: the loop's ~800 small
    # kernel launches per token dominate. Large-matmul streaming reaches ~60% of the published bandwidth
    # (assumed); the overhead is what remains of the 3060's tokens (85 ms, the fast end of 85-135 ms).
    # torch.compile: the field notes saw 20-30% faster decoding on Linux/WSL2; the low end is used.
    "cuda": DecodeCalibration(
        0.6, 0.085, "calibrated on the field notes' RTX 3060 (S1-mini fp16, RTF 2-3); not measured on this card",
        measured=False, compile_speedup=1.2,
    ),
    # The same loop on an Apple GPU through MPS. No fp16-on-MPS measurement of fish-speech exists in the field
    # notes; Metal's dispatch is assumed no cheaper than CUDA's, so the CUDA calibration is used as it is.
    "mps": DecodeCalibration(
        0.6, 0.085, "assumed equal to the CUDA calibration (no fp16-on-MPS measurement); Apple GPU bandwidth "
        "from the chip table", measured=False,
    ),
    # torch on the CPU: measured on a 2-core server with an S1-mini-shaped model (random weights, fp32):
    # 405-430 ms per token with one thread, i.e. ~11 GB/s achieved; callers pass that achieved figure as the
    # bandwidth. Overhead: 1.4 ms per codebook on the tiny checkpoint (callers scale it by the model's codebooks).
    "cpu": DecodeCalibration(
        1.0, 0.0, "measured on a 2-core AMD EPYC server with an S1-mini-shaped model (11 GB/s, one thread) and "
        "the tiny test checkpoint (1.4 ms per codebook)", measured=True,
    ),
}

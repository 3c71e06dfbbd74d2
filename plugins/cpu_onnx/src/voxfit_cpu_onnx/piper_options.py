"""The voice options a Piper voice takes, as the typed model the core validates user input against."""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class PiperOptions(BaseModel):
    """Options of the piper-onnx engine; an unset one keeps the voice's own default."""

    model_config = ConfigDict(extra="forbid")

    speaker: Optional[Union[int, str]] = Field(
        default=None, description="Speaker id or name (multi-speaker voices only)."
    )
    length_scale: Optional[float] = Field(
        default=None, gt=0.0, le=10.0, description="Phoneme length: > 1 slower speech, < 1 faster."
    )
    noise_scale: Optional[float] = Field(default=None, ge=0.0, le=10.0, description="Generator noise.")
    noise_w_scale: Optional[float] = Field(default=None, ge=0.0, le=10.0, description="Phoneme width noise.")
    sentence_silence: Optional[float] = Field(
        default=None, ge=0.0, le=10.0, description="Seconds of silence between sentences."
    )

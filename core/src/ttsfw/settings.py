"""Run settings: ``TTSFW_*`` environment variables and ``.env``, CLI flags on top."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import UsageError

# Device families are whatever the installed plugins register (cpu, cuda, mps,
# a third party's rocm or npu); the plan checks the name against them. Here only
# the shape of the name is checked.
DEVICE_PATTERN = r"^(auto|[a-z][a-z0-9_+.-]{0,63})$"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ttsfw"


def _split_names(value: Any) -> Any:
    # "cuda, mps" from the environment; a list from code or the CLI.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TTSFW_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    device: str = Field(
        default="auto", pattern=DEVICE_PATTERN,
        description="auto, or a device family (cpu, cuda, mps, or one a plugin registers): a hard constraint.",
    )
    model: Optional[str] = Field(default=None, description="Model path; the embedded default voice if unset.")
    block_plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_plugins: Annotated[Optional[list[str]], NoDecode] = Field(
        default=None, description="If set, only these plugins are loaded."
    )
    strict: bool = Field(default=False, description="Plugin failures become errors.")
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    memory_headroom: float = Field(
        default=0.15, ge=0.0, lt=1.0, description="Share of free memory a plan leaves unused."
    )

    # Where the device lock came from ("--device" or "TTSFW_DEVICE"), for messages about it.
    _device_source: str = PrivateAttr(default="TTSFW_DEVICE")

    @property
    def device_source(self) -> str:
        return self._device_source

    @field_validator("device", mode="before")
    @classmethod
    def _lower_device(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("block_plugins", "allow_plugins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_names(value)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and ``.env``, with non-None overrides on top.

    Any invalid value, from a flag or the environment, becomes a one-line
    :class:`UsageError` naming where it came from.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        source = "--" + field.replace("_", "-") if field in given else f"TTSFW_{field.upper()}"
        value = given.get(field, os.environ.get(f"TTSFW_{field.upper()}", err.get("input")))
        if field == "device":
            raise UsageError(
                f"unknown device {value!r} from {source}: name a device family (e.g. cpu, cuda) or auto"
            ) from None
        raise UsageError(f"invalid value {value!r} from {source}: {err['msg']}") from None
    if "device" in given:
        settings._device_source = "--device"
    return settings

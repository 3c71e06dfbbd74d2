"""Run settings: ``VOXFIT_*`` environment variables and ``.env``, CLI flags on top."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import DotEnvSettingsSource

from voxfit.errors import UsageError
from voxfit.util.cache_dir import PROJECT, cache_base
from voxfit.util.files import UnreadableFile, load_small_text

# Device families are whatever the installed plugins register (cpu, cuda, mps,
# a third party's rocm or npu); the plan checks the name against them. Here only
# the shape of the name is checked.
DEVICE_PATTERN = r"^(auto|[a-z][a-z0-9_+.-]{0,63})$"
DOTENV = ".env"


def _default_cache_dir() -> Path:
    return cache_base(os.environ) / PROJECT


def _split_names(value: Any) -> Any:
    # "cuda, mps" from the environment; a list from code or the CLI.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _dotenv_values(text: str, where: str) -> dict[str, str]:
    """The assignments in a .env file's text, parsed as pydantic-settings would, but quietly.

    A line python-dotenv cannot parse is another tool's business (the file is
    shared with docker compose and the like) unless it names a VOXFIT_ setting:
    then it is an error, not a setting silently ignored.
    """
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    kept = []
    for binding in parse_stream(io.StringIO(text)):
        if not binding.error:
            kept.append(binding.original.string)
        elif "VOXFIT_" in binding.original.string.upper():
            line = binding.original.string.strip()
            shown = repr(line[:60] + ("..." if len(line) > 60 else ""))
            raise UsageError(f"{where}, line {binding.original.line}, cannot be parsed: {shown}")
    values = dotenv_values(stream=io.StringIO("".join(kept)))
    return {key: value for key, value in values.items() if value is not None}


class _BoundedDotEnv(DotEnvSettingsSource):
    """pydantic-settings' ``.env`` source, reading the file the way voxfit reads every small file.

    Only a regular file is read (a link to one included). A ``.env`` directory
    is common, the virtual environment of ``python -m venv .env``, and a link to
    /dev/null or another device is how a user says "no .env"; both are skipped,
    as pydantic-settings skips them. A file that is too large or not UTF-8 is a
    one-line error naming it, not a traceback.
    """

    def _load_env_vars(self) -> Mapping[str, Optional[str]]:
        path = Path(DOTENV)
        if not path.is_file():
            return {}
        where = f"{DOTENV} in {path.absolute().parent}"
        try:
            text = load_small_text(path)
        except UnreadableFile as exc:
            raise UsageError(f"{where} {exc}; voxfit reads VOXFIT_* settings from it (fix or move it)") from None
        values = _dotenv_values(text, where)
        return values if self.case_sensitive else {key.lower(): value for key, value in values.items()}


class Settings(BaseSettings):
    """Everything a run may be told: ``VOXFIT_*`` environment variables, then a ``.env`` file, under the flags.

    Frozen once built: hooks receive the run's settings and read them. Each
    field's description says what it does; ``load_settings`` turns an invalid
    value into a one-line error naming where it came from.
    """

    # env_file stays unset: _BoundedDotEnv reads .env in its place (settings_customise_sources).
    model_config = SettingsConfigDict(env_prefix="VOXFIT_", extra="ignore", frozen=True)

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
    plan_cache: bool = Field(
        default=True, description="Reuse a remembered plan while nothing it depends on changed (false: plan afresh "
        "every time, as --no-cache)."
    )
    memory_headroom: float = Field(
        default=0.15, ge=0.0, lt=1.0, description="Share of free memory a plan leaves unused."
    )
    max_batch: int = Field(
        default=4, ge=1, le=64, description="Most requests one engine decodes together (a batched engine's "
        "batch is as large as memory allows, up to this)."
    )
    cpu_budget: Optional[int] = Field(
        default=None, ge=1,
        description="Cores this process may use; plans count no more (a container's or a Ray replica's share)",
    )
    cpu_reserved: bool = Field(
        default=False, description="The budget's cores are reserved for this process (a Ray replica): plan threads "
        "for them without reading the machine's load.",
    )

    # -- voxfit serve (docs/serving.md); each is also a flag of `voxfit serve` --
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Models `voxfit serve` offers, comma-separated (default: VOXFIT_MODEL)."
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address `voxfit serve` listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port `voxfit serve` listens on (0: any free one).")
    workers_per_engine: int = Field(
        default=1, ge=1, le=64, description="Engines loaded per voice (each runs one request at a time, or "
        "several if it declares ConcurrentSynthesis)."
    )
    max_queue: int = Field(default=8, ge=0, le=10_000, description="Requests waiting per voice beyond the busy ones.")
    request_timeout: float = Field(
        default=120.0, gt=0, le=86_400, description="Seconds a request may take, its time in the queue included."
    )
    drain_timeout: float = Field(
        default=30.0, ge=0, le=3600, description="Seconds in-flight requests get to finish after SIGTERM."
    )
    replan_window: float = Field(
        default=10.0, ge=0, le=3600, description="Seconds other processes' CPU load must differ from what a voice's "
        "plan was made for before the server re-plans it (threads follow the load); 0: never."
    )
    api_key: Optional[str] = Field(default=None, description="If set, every route but /health needs this bearer key.")
    metrics_log: Optional[Path] = Field(default=None, description="File to append one JSON line per request to.")
    max_input_chars: int = Field(default=4096, ge=1, le=500_000, description="Longest text one request may carry.")
    max_upload_bytes: int = Field(default=10 * 2**20, ge=1024, description="Largest reference-audio upload.")
    max_reference_seconds: float = Field(default=30.0, gt=0, description="Longest reference-audio clip accepted.")
    voice_aliases: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description='Other names for voices, e.g. "alloy=VOICE,echo=VOICE" (OpenAI names).'
    )
    # Home Assistant's protocol beside (or instead of) HTTP (docs/wyoming.md).
    wyoming: Optional[str] = Field(
        default=None, description="Also serve the Wyoming protocol at tcp://HOST:PORT (Home Assistant's TTS)."
    )
    http: bool = Field(default=True, description="Serve HTTP; false serves Wyoming alone (needs VOXFIT_WYOMING).")
    # Serving on a Ray cluster (docs/ray.md).
    ray: bool = Field(default=False, description="Serve on Ray Serve: replicas that each plan on their node.")
    ray_address: Optional[str] = Field(
        default=None, description="Ray cluster to join (ray://HOST:10001 or auto); unset: RAY_ADDRESS or a new local one."
    )
    replicas: int = Field(default=1, ge=1, le=1024, description="Replicas per node of each node class (--ray).")
    autoscale: Optional[str] = Field(
        default=None, pattern=r"^\d+:\d+$", description="MIN:MAX replicas per node, scaled on Ray's queue (--ray)."
    )

    # Where the device lock came from ("--device", "VOXFIT_DEVICE" or the .env file), for messages about it.
    _device_source: str = PrivateAttr(default="VOXFIT_DEVICE")

    @property
    def device_source(self) -> str:
        return self._device_source

    @field_validator("device", mode="before")
    @classmethod
    def _lower_device(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The same order as pydantic-settings' own: arguments, environment, .env, secrets.
        return init_settings, env_settings, _BoundedDotEnv(settings_cls), file_secret_settings

    @field_validator("models", mode="before")
    @classmethod
    def _model_list(cls, value: Any) -> Any:
        return _split_names(value)

    @field_validator("voice_aliases", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        if not isinstance(value, str):
            return value
        out: dict[str, str] = {}
        for pair in _split_names(value):
            alias, sep, voice = pair.partition("=")
            if not sep or not alias.strip() or not voice.strip():
                raise ValueError(f"a voice alias is ALIAS=VOICE (e.g. alloy=en_US-joe-medium), got {pair!r}")
            out[alias.strip()] = voice.strip()
        return out

    @field_validator("block_plugins", "allow_plugins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any, info: ValidationInfo) -> Any:
        names = _split_names(value)
        # VOXFIT_ALLOW_PLUGINS= (empty) is unset like any empty variable, not "allow no plugin at all".
        if info.field_name == "allow_plugins" and isinstance(value, str) and not names:
            return None
        return names

    @field_validator("model", "cache_dir", "metrics_log", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # Only .env can carry one (argv and the environment cannot); every file call would raise on it.
        if value is not None and "\x00" in str(value):
            raise ValueError("a path cannot contain a NUL character")
        return value

    @field_validator("cpu_budget", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # VOXFIT_CPU_BUDGET= (empty) is unset like any empty variable: no budget, not an error.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _empty_means_default(cls, value: Any) -> Any:
        # VOXFIT_CACHE_DIR= (empty) is unset, as an empty XDG_CACHE_HOME is: Path("")
        # is the current directory, and tens of megabytes of caches would land there.
        if isinstance(value, str):
            if not value.strip():
                return _default_cache_dir()
            return Path(value).expanduser()  # "~/..." from .env, where no shell expanded it
        return value


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
        variable = f"VOXFIT_{field.upper()}"
        # No default is invalid: a value that is not a flag nor in the environment came from .env.
        source = _source_of(field, given)
        value = given.get(field, os.environ.get(variable, err.get("input")))
        value = str(value) if isinstance(value, Path) else value
        if field == "device":
            raise UsageError(
                f"unknown device {value!r} from {source}: name a device family (e.g. cpu, cuda) or auto"
            ) from None
        raise UsageError(f"invalid value {value!r} from {source}: {err['msg'].removeprefix('Value error, ')}") from None
    settings._device_source = _source_of("device", given)
    return settings


def _source_of(field: str, given: dict[str, Any]) -> str:
    """Where a setting's value came from: its flag, its variable, or the .env file (the order they win in)."""
    variable = f"VOXFIT_{field.upper()}"
    if field in given:
        return "--" + field.replace("_", "-")
    if any(key.upper() == variable for key in os.environ):
        return variable
    return f"{variable} in {Path(DOTENV).absolute()}"

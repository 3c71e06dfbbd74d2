"""The ``voxfit`` command group: its global options, what they decide, and what every command shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from voxfit.planning import cpu_load

cpu_load.mark()  # the CPU-load window starts with the process: the plan reads it later without waiting

import click  # noqa: E402

from voxfit import __version__  # noqa: E402
from voxfit.errors import UsageError  # noqa: E402

# pydantic models and settings are imported where they are used: `voxfit plan` printing a
# remembered plan needs neither (see voxfit.planning.reuse).
if TYPE_CHECKING:
    from voxfit.planning.reuse import Planned, PlanRequest
    from voxfit.plugins import PluginHost
    from voxfit.registry import Registry
    from voxfit.settings import Settings


class Context:
    """What the group options decided, handed to every command."""

    def __init__(self, blocked: list[str], allowed: list[str], strict: Optional[bool]) -> None:
        self.blocked, self.allowed, self.strict = blocked, allowed, strict
        self._registry: Optional[Registry] = None

    def settings(self, **overrides: Any) -> Settings:
        from voxfit.settings import load_settings

        base = load_settings(strict=self.strict, **overrides)
        update: dict[str, Any] = {}
        if self.blocked:
            update["block_plugins"] = sorted(set(base.block_plugins) | set(self.blocked))
        if self.allowed:
            update["allow_plugins"] = sorted(set(base.allow_plugins or []) | set(self.allowed))
        return base.model_copy(update=update) if update else base

    def request(self, model: Optional[str], device: Optional[str], hardware: Optional[Path] = None,
                cpu_budget: Optional[int] = None, no_cache: bool = False) -> PlanRequest:
        from voxfit.planning.reuse import PlanRequest

        return PlanRequest(model=model, device=device, hardware=hardware, blocked=self.blocked,
                           allowed=self.allowed, strict=self.strict, cpu_budget=cpu_budget, no_cache=no_cache)

    def host(self, settings: Settings) -> PluginHost:
        from voxfit.plugins import PluginHost

        return PluginHost.from_entry_points(settings)

    def registry(self) -> Registry:
        """The engines and device families the installed plugins register (for help texts and voice options)."""
        if self._registry is None:
            self._registry = self.host(self.settings()).registry
        return self._registry


def _parse_plugin_options(values: tuple[str, ...]) -> list[str]:
    blocked = []
    for value in values:
        if not value.startswith("no:") or not value[3:]:
            raise UsageError(f"-p expects no:NAME to block a plugin, got {value!r}")
        blocked.append(value[3:])
    return blocked


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="voxfit")
@click.option("-p", "plugin_options", multiple=True, metavar="no:NAME", help="Block a plugin by name (repeatable).")
@click.option("--allow-plugin", "allowed", multiple=True, metavar="NAME", help="Load only these plugins (repeatable).")
@click.option("--strict/--no-strict", default=None, help="Turn plugin failures into errors (VOXFIT_STRICT).")
@click.pass_context
def main(ctx: click.Context, plugin_options: tuple[str, ...], allowed: tuple[str, ...], strict: Optional[bool]) -> None:
    """Hardware-aware runtime for neural text-to-speech."""
    ctx.obj = Context(_parse_plugin_options(plugin_options), list(allowed), strict)


class DeviceOption(click.Option):
    """``--device``, whose help names the device families the installed plugins register (read when shown)."""

    def get_help_record(self, ctx: click.Context) -> Optional[tuple[str, str]]:
        record = super().get_help_record(ctx)
        obj = ctx.find_object(Context)
        if record is None or obj is None:
            return record
        try:
            families = ", ".join(sorted(obj.registry().families))
        except Exception:  # a help text never fails; the command itself will say what is wrong
            return record
        return record[0], f"{record[1]} Installed families: {families}."


def device_option(help_text: str = "auto, or a device family: a hard constraint (VOXFIT_DEVICE).") -> Any:
    return click.option("--device", "-d", default=None, cls=DeviceOption, help=help_text)


NO_CACHE = click.option(
    "--no-cache", is_flag=True,
    help="Plan afresh and remember nothing (VOXFIT_PLAN_CACHE=false does the same for every command).")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def build_plan(obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path],
               cpu_budget: Optional[int] = None, no_cache: bool = False, found: Any = None) -> Planned:
    """Settings -> plugins -> plan, or the remembered plan when nothing it depends on changed; shared by `plan`,
    `run`, `tune` and `cluster` (which passes each replica's share of a node as ``cpu_budget``)."""
    from voxfit.planning.reuse import plan

    settings = obj.settings(model=model, device=device, cpu_budget=cpu_budget)
    return plan(obj.request(model, device, hardware, cpu_budget, no_cache or not settings.plan_cache), settings,
                found)


def describe_memory(n: Optional[int]) -> str:
    from voxfit.planning.hardware import describe_memory as describe

    return describe(n)

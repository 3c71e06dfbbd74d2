"""What the plugins contribute by registration: engine backends and device families.

Both registries are filled once per :class:`~voxfit.plugins.PluginHost` by the
``register_engines`` and ``register_device_families`` hooks; first-party and
third-party plugins register the same way. A registration that is not the
right type, or a name already taken, is reported as that plugin's problem and
left out; the rest of the registry stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from voxfit.engine import DecodeCalibration, EngineInfo, Pacing

if TYPE_CHECKING:
    from pydantic import BaseModel

_NAME = re.compile(r"^[a-z][a-z0-9_+.-]{0,63}$")


@dataclass(frozen=True)
class DeviceFamilyInfo:
    """A family of devices a plugin knows, present on this machine or not."""

    name: str
    description: str = ""
    plugin: str = ""  # stamped by the core
    #: The cluster scheduler's resource (Ray's vocabulary: "GPU", or a custom one such as "NPU") that a
    #: replica using one device of this family must hold, e.g. "GPU" for CUDA. None: the family needs only
    #: CPUs. The core never maps family names to resources itself; it reads this (voxfit.cluster.requests).
    cluster_resource: Optional[str] = None


@dataclass
class Registry:
    """Engines by backend name and device families by name, with who registered each."""

    engines: dict[str, EngineInfo] = field(default_factory=dict)
    families: dict[str, DeviceFamilyInfo] = field(default_factory=dict)

    def engine(self, backend: str) -> Optional[EngineInfo]:
        return self.engines.get(backend)

    def options_for(self, backend: str) -> Optional[type[BaseModel]]:
        """The voice options model of a backend (a variant's comes from the backend it varies)."""
        options: Optional[type[BaseModel]] = self._inherited(backend, "options")
        return options

    def pacing_for(self, backend: str) -> Optional[Pacing]:
        """Which options set a backend's pace (a variant's comes from the backend it varies)."""
        pacing: Optional[Pacing] = self._inherited(backend, "pacing")
        return pacing

    def speaker_option_for(self, backend: str) -> str:
        """The option that picks a speaker (a variant's comes from the backend it varies); "" when none."""
        option: str = self._inherited(backend, "speaker_option") or ""
        return option

    def calibration_for(self, backend: str, family: str) -> Optional[DecodeCalibration]:
        """A backend's decoding speed on a device family (a variant's comes from the backend it varies)."""
        decode = self._inherited(backend, "decode") or {}
        return decode.get(family)

    def _inherited(self, backend: str, attribute: str) -> Any:
        info = self.engines.get(backend)
        seen = 0
        while info is not None and not getattr(info, attribute) and info.variant_of and seen < 8:
            info, seen = self.engines.get(info.variant_of), seen + 1
        return getattr(info, attribute) if info is not None else None

    def family_names(self, hardware: Any = None) -> list[str]:
        """Families registered, plus those of devices in a profile (a saved one may name others)."""
        names = set(self.families)
        if hardware is not None:
            names.update(d.family for d in hardware.devices)
        return sorted(names)

    def loader(self, backend: str) -> Callable[..., Any]:
        """The loader of a registered engine (imports its module now); ``LookupError`` if unknown."""
        info = self.engines.get(backend)
        if info is None:
            raise LookupError(f"no installed plugin registered engine {backend!r}")
        return info.load()

    def add_engine(self, info: Any, plugin: str = "core") -> None:
        if not isinstance(info, EngineInfo):
            raise TypeError(f"register_engines: expected an EngineInfo, got {type(info).__name__}")
        _check_name("engine backend", info.backend)
        taken = self.engines.get(info.backend)
        if taken is not None:
            raise ValueError(f"engine {info.backend!r} is already registered by {taken.plugin!r}")
        self.engines[info.backend] = _stamped(info, plugin)

    def add_family(self, info: Any, plugin: str = "core") -> None:
        if not isinstance(info, DeviceFamilyInfo):
            raise TypeError(f"register_device_families: expected a DeviceFamilyInfo, got {type(info).__name__}")
        _check_name("device family", info.name)
        if info.name == "auto":
            raise ValueError("'auto' is not a device family: it means 'let the plan choose'")
        _check_resource(info)
        if info.name not in self.families:  # several plugins may know one family (cuda and wsl)
            self.families[info.name] = _stamped(info, plugin)


def _check_name(what: str, name: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{what} {name!r} must be lowercase letters, digits and _+.- (at most 64)")


def _check_resource(info: DeviceFamilyInfo) -> None:
    # A replica's request is built from this name: a blank or spaced one would be a resource no node offers.
    resource = info.cluster_resource
    if resource is not None and (not isinstance(resource, str) or not resource or resource != resource.strip()
                                 or len(resource) > 64):
        raise ValueError(f"device family {info.name!r}: cluster_resource {resource!r} must be None or a resource "
                         "name such as 'GPU' (no surrounding spaces, at most 64 characters)")


def _stamped(info: Any, plugin: str) -> Any:
    from dataclasses import replace

    return replace(info, plugin=plugin)

"""The engine contract: what `load_engine` returns and the runtime drives.

Engines are adapters in the core (``ttsfw.engines``), imported lazily;
plugins decide how to load and place them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Protocol, runtime_checkable


@dataclass
class AudioChunk:
    """Mono 16-bit little-endian PCM for one piece of text."""

    pcm: bytes
    sample_rate: int
    text: str = ""
    tokens: Optional[int] = None  # semantic tokens generated, where the engine has tokens

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0


@runtime_checkable
class Engine(Protocol):
    """A loaded, ready-to-run text-to-speech engine."""

    backend: str
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        """Speak one sentence-sized chunk of text; may yield several audio chunks."""
        ...

    def inference_modules(self) -> Iterable[Any]:
        """torch modules (or none) on which the core checks the inference invariants."""
        ...

    def close(self) -> None:
        ...


@dataclass
class EngineInfo:
    """What the core knows about an engine backend before loading it."""

    backend: str
    families: frozenset[str]
    requires: tuple[str, ...] = ()
    description: str = ""
    extra: str = ""  # the pip extra that brings its requirements
    metadata: dict[str, Any] = field(default_factory=dict)

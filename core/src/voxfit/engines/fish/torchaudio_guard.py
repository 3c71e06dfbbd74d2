"""Make ``import torchaudio`` harmless where no working torchaudio exists.

Why: fish-speech's codec imports ``descript-audiotools``, which does a
top-level ``import torchaudio``, yet nothing on fish-speech's inference path
(text -> semantic tokens -> codec decode, codec encode for voice cloning)
ever calls torchaudio. PyPI's newest torchaudio (2.11.0) is a CUDA build: its
compiled library needs ``libc10_cuda.so`` and fails to load next to a CPU
torch (``OSError``), and it pins a different torch. So voxfit does not install
it.

What: :func:`ensure_torchaudio_importable` first tries the real module; only
when that import fails does it register a placeholder module named
``torchaudio`` that raises :class:`TorchaudioUnavailable` (with the original
import error) on any attribute use. Nothing in fish-speech or audiotools is
modified. A working torchaudio, where one is installed, is always used.

Details that matter:

* the placeholder has a real ``__spec__``: transformers calls
  ``importlib.util.find_spec("torchaudio")``, which raises
  ``ValueError: torchaudio.__spec__ is None`` for a bare module;
* :class:`TorchaudioUnavailable` subclasses ``AttributeError`` so that
  ``hasattr(torchaudio, name)`` answers False instead of raising.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

PLACEHOLDER_VERSION = "0.0.0+voxfit.placeholder"


class TorchaudioUnavailable(AttributeError):
    """Something used torchaudio, which this runtime replaced with a placeholder."""


def is_placeholder(module: object) -> bool:
    return getattr(module, "__version__", None) == PLACEHOLDER_VERSION


def ensure_torchaudio_importable() -> str:
    """Import the real torchaudio, or register the placeholder; say which."""
    existing = sys.modules.get("torchaudio")
    if existing is not None and is_placeholder(existing):
        return "placeholder (already installed)"
    try:
        import torchaudio

        return f"torchaudio {torchaudio.__version__}"
    except (ImportError, OSError) as exc:  # OSError: a CUDA-linked library next to CPU torch
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
        del sys.modules[name]  # a half-imported real package must not linger
    placeholder = types.ModuleType("torchaudio")
    placeholder.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    placeholder.__version__ = PLACEHOLDER_VERSION
    placeholder.__doc__ = "voxfit placeholder: torchaudio could not be imported (" + reason + ")"

    def __getattr__(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        raise TorchaudioUnavailable(
            f"torchaudio.{name} is not available in this runtime ({reason}); voxfit registered a placeholder "
            "because fish-speech's inference path does not use torchaudio"
        )

    placeholder.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["torchaudio"] = placeholder
    return f"placeholder ({reason})"

"""The engine registry: config ``platform`` -> the Engine class that loads it.

Entries name their class by dotted path, imported on first use, so a node without an
optional runtime pays nothing for it and learns which extra to install when a model needs
it. A new engine is one module (an :class:`~edgetier.runtime.Engine` subclass) and one
line here, or one call from a third party::

    register_engine("mytool_bin", "my_package.engine.MyEngine", backend="mytool",
                    filename="model.bin", extra="my-package")
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgetier.errors import ConfigError, MissingExtraError

if TYPE_CHECKING:
    from edgetier.runtime._engine import Engine

__all__ = [
    "DEFAULT_PLATFORM",
    "EngineEntry",
    "engine_class",
    "engine_entry",
    "known_platforms",
    "platform_for_backend",
    "platform_for_file",
    "register_engine",
]


@dataclass(frozen=True)
class EngineEntry:
    """One registered engine: where its class lives and what it reads."""

    platform: str  # config `platform`, Triton's spelling where Triton has one
    target: str  # dotted path of the Engine subclass, imported on first use
    backend: str  # config `backend`
    filename: str  # default_model_filename; its suffix identifies the platform's files
    module: str  # the module to import for the runtime itself, named in errors
    extra: str | None  # the edgetier extra that installs it; None: part of the core


_ENGINES: dict[str, EngineEntry] = {
    "onnxruntime_onnx": EngineEntry(
        "onnxruntime_onnx",
        "edgetier.runtime._onnx.OnnxEngine",
        "onnxruntime",
        "model.onnx",
        "onnxruntime",
        None,
    ),
    "litert_tflite": EngineEntry(
        "litert_tflite",
        "edgetier.runtime._tflite.LiteRTEngine",
        "litert",
        "model.tflite",
        "ai_edge_litert",
        "tflite",
    ),
}

DEFAULT_PLATFORM = "onnxruntime_onnx"
"""The platform of a model whose config and files do not say."""


def register_engine(
    platform: str,
    target: str,
    *,
    backend: str,
    filename: str,
    module: str | None = None,
    extra: str | None = None,
    clobber: bool = False,
) -> None:
    """Register an Engine class for ``platform`` (``target``: "package.module.Class").

    ``module`` is the runtime the class imports (named with ``extra`` in the error when
    it is missing). Refuses to replace an entry unless ``clobber``.
    """
    if platform in _ENGINES and not clobber:
        raise ConfigError(
            f"engine platform {platform!r} is already registered "
            f"({_ENGINES[platform].target}); pass clobber=True to replace it"
        )
    if "." not in target:
        raise ConfigError(
            f"engine target must be a dotted path 'package.module.Class', got {target!r}"
        )
    _ENGINES[platform] = EngineEntry(
        platform, target, backend, filename, module or target.rsplit(".", 2)[0], extra
    )


def known_platforms() -> list[str]:
    """Every registered platform, built-in ones first."""
    return list(_ENGINES)


def engine_entry(platform: str) -> EngineEntry:
    entry = _ENGINES.get(platform)
    if entry is None:
        raise ConfigError(f"platform must be one of {', '.join(_ENGINES)}, got {platform!r}")
    return entry


def platform_for_backend(backend: str) -> str | None:
    """The platform whose engine has this ``backend`` name, if any."""
    return next((e.platform for e in _ENGINES.values() if e.backend == backend), None)


def platform_for_file(path: Path) -> str | None:
    """The platform whose files end like ``path`` (``.onnx``, ``.tflite``), if any."""
    suffix = Path(path).suffix.lower()
    return next((e.platform for e in _ENGINES.values() if Path(e.filename).suffix == suffix), None)


def engine_class(platform: str) -> type[Engine]:
    """Import and return the Engine class of ``platform``.

    Raises MissingExtraError naming the extra when the runtime it needs is not installed.
    """
    entry = engine_entry(platform)
    module_name, _, class_name = entry.target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or entry.module
        if entry.extra is None or not _is_runtime(missing, entry):
            raise
        raise MissingExtraError(entry.module, entry.extra) from exc
    cls: type[Engine] = getattr(module, class_name)
    return cls


def _is_runtime(missing: str, entry: EngineEntry) -> bool:
    """Whether the missing module is the engine's runtime (not a bug in the engine)."""
    root = missing.split(".")[0]
    return root == entry.module.split(".")[0] or not missing.startswith("edgetier")

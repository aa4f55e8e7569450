"""Engines: the one place that turns a model config into loaded engines.

``load_engines`` honours ``instance_group`` as Triton does (``count`` engines on each
listed GPU; a GPU group without ``gpus`` on every visible GPU) and dispatches on
``config.platform`` through the engine registry, so the server and the pipelines get
their engines the same way and hand them, one per worker, to the DynamicBatcher::

    engines = load_engines(Path("models/resnet50/1/model.onnx"), repo.config("resnet50"))
    engines[0].provider                      # where its nodes run: "CPUExecutionProvider"
    engines[0].run({"input": batch})["output"]
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgetier.errors import ModelLoadError
from edgetier.runtime._config import InstanceGroup, ModelConfig
from edgetier.runtime._providers import visible_gpu_count
from edgetier.runtime._registry import engine_class

__all__ = [
    "Engine",
    "GraphTensor",
    "Placement",
    "TensorSpec",
    "load_engine",
    "load_engines",
    "placements",
]


@dataclass(frozen=True)
class TensorSpec:
    """An engine's input or output: KServe datatype and full shape (batch dim included)."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class GraphTensor:
    """An input or output as the model file declares it (shape with -1 for dynamic)."""

    name: str
    data_type: str  # Triton spelling
    shape: list[int] | None  # None: the file gives no shape


@dataclass(frozen=True)
class Placement:
    """Where one instance runs: its instance group and, for GPU kinds, its GPU id."""

    instance: int
    group: InstanceGroup
    device_id: int

    @property
    def cpu_only(self) -> bool:
        return self.group.kind == "KIND_CPU"


class Engine(abc.ABC):
    """One loaded model version, one instance. ``run`` is thread-safe.

    Subclasses load one model format (``platform``); they read the file's inputs and
    outputs for config auto-completion (``read_io``) and load one instance (``load``).
    ``provider`` says where the work actually runs; ``notes`` say, in words, where that
    differs from what the config asked for (a provider that failed, CUDA graphs off).
    """

    platform: ClassVar[str]
    name: str
    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    provider: str
    device_id: int
    notes: list[str]

    @classmethod
    @abc.abstractmethod
    def read_io(cls, path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
        """The inputs and outputs the model file declares (for config auto-completion)."""

    @classmethod
    def can_use_gpu(cls, config: ModelConfig) -> bool:
        """Whether this engine, as installed, can run ``config`` on an NVIDIA GPU."""
        return False

    @classmethod
    @abc.abstractmethod
    def load(cls, path: Path, config: ModelConfig, placement: Placement) -> Engine:
        """Load one instance; raises ModelLoadError with the runtime's reason."""

    @abc.abstractmethod
    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch; returns the requested outputs (all when ``output_names`` is None)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the runtime's resources; later calls to run raise ModelNotReadyError."""


def placements(config: ModelConfig, *, gpu_count: int | None = None) -> list[Placement]:
    """Every instance the config's instance groups ask for, in order (Triton's rules).

    ``count`` instances go on each GPU of ``gpus``; a KIND_GPU group without ``gpus`` puts
    ``count`` on every visible GPU, and so does a KIND_AUTO group where the engine can use
    them (not with onnxruntime's CPU wheel, nor LiteRT); KIND_CPU and, on a node without
    GPUs, the other kinds give ``count`` instances.
    """
    gpus_here = visible_gpu_count() if gpu_count is None else gpu_count
    auto_on_gpus = gpus_here > 0 and engine_class(config.platform).can_use_gpu(config)
    out: list[Placement] = []
    for index, group in enumerate(config.instance_group):
        if group.kind == "KIND_CPU":
            devices = [0]
        elif group.gpus:
            if gpus_here:
                bad = [g for g in group.gpus if g >= gpus_here]
                if bad:
                    raise ModelLoadError(
                        f"model {config.name!r}: instance_group[{index}].gpus: GPU "
                        f"{', '.join(map(str, bad))} does not exist; this node has "
                        f"{gpus_here} GPU{'s' if gpus_here != 1 else ''} (ids 0-{gpus_here - 1})"
                    )
            devices = list(group.gpus)
        elif group.kind == "KIND_GPU" or auto_on_gpus:
            devices = list(range(gpus_here)) or [0]
        else:
            devices = [0]
        for device in devices:
            out.extend(Placement(len(out), group, device) for _ in range(group.count))
    return out


def load_engines(path: Path, config: ModelConfig) -> list[Engine]:
    """Load every instance of the model at ``path``: one engine per placement.

    A failure closes the engines already loaded and raises.
    """
    cls = engine_class(config.platform)
    engines: list[Engine] = []
    try:
        for placement in placements(config):
            engines.append(cls.load(Path(path), config, placement))
    except BaseException:
        for engine in engines:
            with contextlib.suppress(Exception):
                engine.close()
        raise
    return engines


def load_engine(path: Path, config: ModelConfig, *, instance: int = 0) -> Engine:
    """Load instance ``instance`` of the model at ``path`` as ``config`` describes it.

    Raises ModelLoadError for a missing or corrupt file (with the runtime's reason) and
    when none of the configured providers is available.
    """
    every = placements(config)
    if not 0 <= instance < len(every):
        raise ModelLoadError(
            f"model {config.name!r}: instance {instance} is out of range; "
            f"instance_group gives {len(every)} instance(s)"
        )
    return engine_class(config.platform).load(Path(path), config, every[instance])

"""An engine for a model format of its own: ``model.npz`` holding a linear layer
(``w`` [in, out] and ``b`` [out]), served as ``y = x @ w + b``. docs/extending.md walks
through it; the repository layout is the usual one::

    models/linear/config.yaml        platform: numpy_npz   (or left out: the file says)
    models/linear/1/model.npz
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgetier.errors import ModelLoadError, ModelNotReadyError
from edgetier.runtime import (
    Engine,
    GraphTensor,
    ModelConfig,
    Placement,
    TensorSpec,
    register_engine,
)


def _weights(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as data:
            return data["w"].astype(np.float32), data["b"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a linear model (w, b): {exc}") from None


class LinearEngine(Engine):
    """y = x @ w + b on the CPU, with numpy (which releases the GIL in the product)."""

    platform: ClassVar[str] = "numpy_npz"

    @classmethod
    def read_io(cls, path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
        w, _ = _weights(path)
        return (
            [GraphTensor("x", "TYPE_FP32", [-1, w.shape[0]])],
            [GraphTensor("y", "TYPE_FP32", [-1, w.shape[1]])],
        )

    @classmethod
    def load(cls, path: Path, config: ModelConfig, placement: Placement) -> LinearEngine:
        return cls(*_weights(path), config, path)

    def __init__(self, w: np.ndarray, b: np.ndarray, config: ModelConfig, path: Path) -> None:
        self.name = config.name
        self.path = path
        self.provider = "numpy CPU"
        self.device_id = 0
        self.notes: list[str] = []
        self.inputs = [TensorSpec(t.name, t.datatype, config.full_shape(t)) for t in config.input]
        self.outputs = [TensorSpec(t.name, t.datatype, config.full_shape(t)) for t in config.output]
        self._w: np.ndarray | None = w
        self._b = b

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        if self._w is None:
            raise ModelNotReadyError(f"model {self.name!r}: engine is closed")
        return {"y": inputs["x"] @ self._w + self._b}

    def close(self) -> None:
        self._w = None


register_engine(
    "numpy_npz", "linear_engine.LinearEngine", backend="numpy", filename="model.npz", clobber=True
)

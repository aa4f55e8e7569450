"""Fixtures for the runtime tests: tiny models written to tmp_path, never downloaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetier.runtime import make_identity, make_simple, make_small


def make_tiny_cnn(path: Path, *, seed: int = 0, batch: str | int = "batch") -> Path:
    """x FP32 [N, 3, 16, 16] -> conv, relu, conv, relu, global pool, gemm -> y FP32 [N, 4]."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        array = rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2 / fan_in))
        return numpy_helper.from_array(array, name)

    inits = [
        weight("w1", 8, 3, 3, 3),
        weight("b1", 8),
        weight("w2", 8, 8, 3, 3),
        weight("b2", 8),
        weight("fc", 4, 8),
        weight("fcb", 4),
    ]
    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=pads),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=pads),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


ModelMaker = Callable[..., Path]


@pytest.fixture
def make_cnn() -> ModelMaker:
    """The tiny conv net builder (a fixture, so tests need not import conftest)."""
    return make_tiny_cnn


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def add_model(repo_root: Path) -> Callable[..., Path]:
    """add_model(name, maker=make_small, versions=(1,), config=None) -> model dir."""

    makers: dict[str, ModelMaker] = {
        "small": make_small,
        "simple": make_simple,
        "identity": make_identity,
        "cnn": make_tiny_cnn,
    }

    def add(
        name: str,
        kind: str = "small",
        *,
        versions: tuple[int, ...] = (1,),
        config: str | None = None,
    ) -> Path:
        model_dir = repo_root / name
        for version in versions:
            makers[kind](model_dir / str(version) / "model.onnx")
        if config is not None:
            (model_dir / "config.yaml").write_text(config)
        return model_dir

    return add

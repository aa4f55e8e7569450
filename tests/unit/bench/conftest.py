"""Fixtures of the bench tests: a tiny ONNX model and synthetic results."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetier.bench import BenchResult, latency_summary


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MatMul + Relu, FP32 [N, 16] -> [N, 4]."""
    weights = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Relu", ["y"], ["out"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def _make_result(throughput: float, *, seed: int = 0, **kw: object) -> BenchResult:
    """A result with latencies drawn from a seeded lognormal."""
    lat = np.random.default_rng(seed).lognormal(15, 0.3, 500).astype(np.int64)
    fields: dict[str, object] = {
        "system": "edgetier",
        "provider": "CPUExecutionProvider",
        "batch_size": 1,
        "concurrency": 1,
        "throughput_per_s": throughput,
        "latency_ms": latency_summary(lat),
        "requests": 500,
    }
    fields.update(kw)
    return BenchResult(**fields)  # type: ignore[arg-type]


@pytest.fixture
def make_result() -> Callable[..., BenchResult]:
    """Factory of synthetic results: make_result(throughput, seed=..., **fields)."""
    return _make_result

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetier.errors import ConfigError
from edgetier.hardware import load_catalog
from edgetier.hardware._advisor import Workload, advise, candidates, estimate
from edgetier.hardware._onnx_cost import model_cost


def _model(path: Path) -> Path:
    w = numpy_helper.from_array(np.ones((16, 3, 3, 3), np.float32), "W")
    g = numpy_helper.from_array(np.ones((16 * 30 * 30, 10), np.float32), "G")
    shape = numpy_helper.from_array(np.array([-1, 16 * 30 * 30], np.int64), "s")
    b = numpy_helper.from_array(np.ones((10,), np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "s"], ["f"]),
        helper.make_node("MatMul", ["f", "G"], ["m"]),
        helper.make_node("Gemm", ["m", "M2"], ["y"], transB=1),
    ]
    m2 = numpy_helper.from_array(np.ones((5, 10), np.float32), "M2")
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, g, shape, b, m2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_macs_of_conv_matmul_gemm(tmp_path: Path) -> None:
    cost = model_cost(_model(tmp_path / "m.onnx"))
    conv = 16 * 30 * 30 * 3 * 3 * 3
    matmul = 16 * 30 * 30 * 10
    gemm = 5 * 10
    assert cost.macs == conv + matmul + gemm
    assert cost.flops == 2 * cost.macs + 16 * 30 * 30  # + Relu; Reshape is free
    assert cost.by_op["Conv"] == 2 * conv


def test_roofline_batch_latency_and_power_budget(tmp_path: Path) -> None:
    cost = model_cost(_model(tmp_path / "m.onnx"))
    nano = next(c for c in candidates(load_catalog()) if c.profile.id == "jetson-nano")
    easy = estimate(cost, nano, Workload(streams=1, fps=1, latency_ms=100))
    assert easy.carries and easy.batch_size == 1 and easy.reasons
    # far more load than the device serves: not carried, and the words say why
    heavy = estimate(cost, nano, Workload(streams=10_000, fps=1000, latency_ms=1000))
    assert not heavy.carries and "busy" in heavy.explain()
    capped = estimate(cost, nano, Workload(1, 1, 100, power_budget_w=6))
    assert "5W" in capped.explain() and capped.capacity_per_s == pytest.approx(
        easy.capacity_per_s / 2
    )
    refused = estimate(cost, nano, Workload(1, 1, 100, power_budget_w=1))
    assert not refused.carries and "lowest power mode" in refused.explain()
    with pytest.raises(ConfigError, match="streams must be > 0, got 0"):
        Workload(0, 1, 1)


def test_ranking_and_bench_correction(tmp_path: Path) -> None:
    path = _model(tmp_path / "m.onnx")
    cost = model_cost(path)
    work = Workload(streams=4, fps=30, latency_ms=50)
    verdicts = advise(path, work)
    carried = [v.carries for v in verdicts]
    assert carried == sorted(carried, reverse=True)  # devices that carry the load come first
    powers = [v.power_w for v in verdicts if v.carries]
    assert powers == sorted(powers)
    t4 = next(v for v in verdicts if v.profile_id == "t4")
    bench = {
        "schema": "edgetier.bench/1",
        "kind": "model",
        "date": "2026-11-25T00:00:00Z",
        "command": "edgetier bench model",
        "versions": {},
        "hardware": {
            "id": "x",
            "cpu": "c",
            "cores": 8,
            "memory_bytes": 1,
            "gpus": ["Tesla T4"],
            "profile": "t4",
        },
        "model": {"name": "m", "sha256": "0" * 64, "flops_per_inference": cost.flops},
        "results": [
            {
                "system": "onnxruntime",
                "precision": "fp16",
                "batch_size": 1,
                "throughput_per_s": t4.capacity_per_s / 4 / t4.batch_size,
            }
        ],
    }
    bench_file = tmp_path / "bench.json"
    bench_file.write_text(json.dumps(bench))
    corrected = {v.profile_id: v for v in advise(path, work, bench_files=[bench_file])}
    assert corrected["t4"].basis == "measured" and "measured/estimated" in corrected["t4"].explain()
    assert corrected["t4"].capacity_per_s < t4.capacity_per_s
    assert corrected["a10"].basis == "estimate"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "other"}')
    with pytest.raises(ConfigError, match="schema"):
        advise(path, work, bench_files=[bad])

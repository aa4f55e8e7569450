"""Small random ONNX models with the layouts of the shipped pipeline models.

A YOLOv8-style detector and a softmax classifier with random weights, so that pipelines
and benchmarks can run anywhere without downloads::

    path = make_random_detector(tmp_path / "det.onnx", input_size=64)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper


def make_random_detector(
    path: Path,
    *,
    input_size: int = 64,
    names: tuple[str, ...] = ("vehicle", "pedestrian", "plate"),
    stride: int = 8,
    seed: int = 0,
) -> Path:
    """A detector [N,3,S,S] -> output0 [N, 4+C, (S/stride)^2], boxes in input pixels."""
    rng = np.random.default_rng(seed)
    c = 4 + len(names)
    anchors = (input_size // stride) ** 2
    weight = rng.normal(0, 0.5, (c, 3, stride, stride)).astype(np.float32)
    scale = np.array([input_size] * 4 + [1.0] * len(names), np.float32).reshape(1, c, 1)
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["conv"], strides=[stride, stride]),
        helper.make_node("Reshape", ["conv", "shape"], ["flat"]),
        helper.make_node("Sigmoid", ["flat"], ["sig"]),
        helper.make_node("Mul", ["sig", "scale"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array([0, c, anchors], np.int64), "shape"),
        numpy_helper.from_array(scale, "scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "detector",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, ["N", 3, input_size, input_size]
            )
        ],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", c, anchors])],
        inits,
    )
    _save(graph, path)
    sidecar = {
        "names": list(names),
        "input_size": [input_size, input_size],
        "letterbox_value": 114,
        "layout": "yolov8",
    }
    path.with_suffix(".yaml").write_text(yaml.safe_dump(sidecar))
    return path


def make_random_classifier(
    path: Path,
    *,
    input_size: int = 64,
    names: tuple[str, ...] = ("red", "blue", "white"),
    seed: int = 0,
) -> Path:
    """A classifier [N,3,S,S] -> probs [N, K] (softmax of a linear map of the mean colour)."""
    rng = np.random.default_rng(seed)
    k = len(names)
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(0, 3, (3, k)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(k, np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, ["N", 3, input_size, input_size]
            )
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k])],
        inits,
    )
    _save(graph, path)
    path.with_suffix(".yaml").write_text(
        yaml.safe_dump({"names": list(names), "input_size": [input_size, input_size]})
    )
    return path


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))

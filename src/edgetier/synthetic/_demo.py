"""The demo model repository: models the project builds itself, no download, no torch.

    build_demo_repository(Path("var/demo-models"))          # resnet50, simple, small, identity
    make_resnet50(Path("/tmp/resnet50.onnx"))               # one model file
    make_simple(Path("/tmp/simple.onnx"))

Weights are random (He initialisation, fixed seed): right for speed work, meaningless for
accuracy. A model whose file exists and was written by the same builder version is kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from edgetier.errors import ConfigError
from edgetier.runtime import DATATYPES, onnx_elem_type, triton_name

__all__ = [
    "DEMO_MODELS",
    "build_demo_repository",
    "make_identity",
    "make_resnet50",
    "make_simple",
    "make_small",
]

OPSET = 17
IR_VERSION = 8  # the oldest IR that opset 17 allows: loads in older ONNX Runtime builds too
_STAMP = ".edgetier-demo.json"


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.ir_version = IR_VERSION
    model.producer_name = "edgetier"
    onnx.checker.check_model(model)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    return path


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


# -- ResNet-50 ---------------------------------------------------------------------------


class _Builder:
    """Collects nodes and initializers of a conv net with He-initialised random weights."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._count}"

    def _weight(self, name: str, shape: tuple[int, ...], std: float) -> str:
        array = self.rng.standard_normal(shape, dtype=np.float32)
        array *= np.float32(std)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def conv(
        self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, *, gain: float = 1.0
    ) -> str:
        """Conv with bias: the bias stands for a batch-norm folded into the conv."""
        name = self._name("conv")
        std = gain * math.sqrt(2.0 / (c_in * k * k))
        w = self._weight(f"{name}.weight", (c_out, c_in, k, k), std)
        b = self._weight(f"{name}.bias", (c_out,), 0.01)
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w, b],
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        name = self._name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    def bottleneck(self, x: str, c_in: int, mid: int, c_out: int, stride: int, gain: float) -> str:
        y = self.op("Relu", [self.conv(x, c_in, mid, 1)])
        y = self.op("Relu", [self.conv(y, mid, mid, 3, stride)])
        # The last conv of a residual branch is scaled down so that activations stay in
        # range through 16 un-normalised blocks (FP16 conversion would overflow otherwise).
        y = self.conv(y, mid, c_out, 1, gain=gain)
        shortcut = x if (stride == 1 and c_in == c_out) else self.conv(x, c_in, c_out, 1, stride)
        return self.op("Relu", [self.op("Add", [y, shortcut])])


def make_resnet50(path: Path, *, seed: int = 0, num_classes: int = 1000) -> Path:
    """Write ResNet-50 (v1.5, batch-norm folded) with random weights; ~100 MB.

    Input ``input`` FP32 [N, 3, 224, 224], output ``output`` FP32 [N, num_classes] (logits).
    """
    b = _Builder(seed)
    x = b.op("Relu", [b.conv("input", 3, 64, 7, 2)])
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    stages = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]
    gain = 1.0 / math.sqrt(sum(n for _, n, _ in stages))
    for mid, blocks, stride in stages:
        for i in range(blocks):
            x = b.bottleneck(x, c_in, mid, mid * 4, stride if i == 0 else 1, gain)
            c_in = mid * 4
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    w = b._weight("fc.weight", (num_classes, c_in), math.sqrt(1.0 / c_in))
    bias = b._weight("fc.bias", (num_classes,), 0.01)
    b.nodes.append(helper.make_node("Gemm", [x, w, bias], ["output"], name="fc", transB=1))
    graph = helper.make_graph(
        b.nodes,
        "resnet50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", num_classes])],
        b.initializers,
    )
    return _save(_model(graph), path)


# -- small models --------------------------------------------------------------------


def make_simple(path: Path) -> Path:
    """Triton's add_sub example: INPUT0, INPUT1 INT32 [N, 16] -> OUTPUT0 = sum, OUTPUT1 = diff."""
    shape: list[str | int] = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub"),
        ],
        "simple",
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("INPUT0", "INPUT1")],
        [
            helper.make_tensor_value_info(n, TensorProto.INT32, shape)
            for n in ("OUTPUT0", "OUTPUT1")
        ],
    )
    return _save(_model(graph), path)


def make_small(path: Path, *, seed: int = 0, hidden: int = 64) -> Path:
    """A tiny MLP for latency work: ``input`` FP32 [N, 16] -> ``output`` FP32 [N, 4]."""
    b = _Builder(seed)
    w1 = b._weight("fc1.weight", (16, hidden), math.sqrt(2.0 / 16))
    b1 = b._weight("fc1.bias", (hidden,), 0.01)
    w2 = b._weight("fc2.weight", (hidden, 4), math.sqrt(1.0 / hidden))
    b2 = b._weight("fc2.bias", (4,), 0.01)
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", ["input", w1]), b1])])
    b.nodes.append(helper.make_node("Add", [b.op("MatMul", [h, w2]), b2], ["output"], name="fc2"))
    graph = helper.make_graph(
        b.nodes,
        "small",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        b.initializers,
    )
    return _save(_model(graph), path)


def make_identity(path: Path, datatypes: Sequence[str] = DATATYPES) -> Path:
    """One Identity per datatype: ``IN_<DT>`` -> ``OUT_<DT>``, shape [N, -1], BYTES included."""
    nodes, inputs, outputs = [], [], []
    for dt in datatypes:
        elem = onnx_elem_type(dt)
        nodes.append(helper.make_node("Identity", [f"IN_{dt}"], [f"OUT_{dt}"], name=dt))
        inputs.append(helper.make_tensor_value_info(f"IN_{dt}", elem, ["batch", "n"]))
        outputs.append(helper.make_tensor_value_info(f"OUT_{dt}", elem, ["batch", "n"]))
    return _save(_model(helper.make_graph(nodes, "identity", inputs, outputs)), path)


# -- the repository ------------------------------------------------------------------


def _tensor(name: str, datatype: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": triton_name(datatype), "dims": dims}


def _configs() -> dict[str, dict[str, Any]]:
    return {
        "resnet50": {
            "max_batch_size": 8,
            "input": [_tensor("input", "FP32", [3, 224, 224])],
            "output": [_tensor("output", "FP32", [1000])],
            "dynamic_batching": {"max_queue_delay_microseconds": 2000},
            "instance_group": [{"count": 1, "kind": "KIND_AUTO"}],
        },
        "simple": {
            "max_batch_size": 8,
            "input": [_tensor(n, "INT32", [16]) for n in ("INPUT0", "INPUT1")],
            "output": [_tensor(n, "INT32", [16]) for n in ("OUTPUT0", "OUTPUT1")],
        },
        "small": {
            "max_batch_size": 8,
            "input": [_tensor("input", "FP32", [16])],
            "output": [_tensor("output", "FP32", [4])],
        },
        "identity": {
            "max_batch_size": 8,
            "input": [_tensor(f"IN_{dt}", dt, [-1]) for dt in DATATYPES],
            "output": [_tensor(f"OUT_{dt}", dt, [-1]) for dt in DATATYPES],
        },
    }


_BUILDERS: dict[str, tuple[int, Callable[[Path], Path]]] = {
    # name: (builder version, builder); bump the version when a builder's output changes.
    "resnet50": (1, make_resnet50),
    "simple": (1, make_simple),
    "small": (1, make_small),
    "identity": (1, make_identity),
}

DEMO_MODELS: tuple[str, ...] = tuple(_BUILDERS)
"""The models build_demo_repository writes by default."""


def _is_current(model_file: Path, builder: str, version: int) -> bool:
    stamp = model_file.parent / _STAMP
    try:
        data = json.loads(stamp.read_text())
        stat = model_file.stat()
    except (OSError, ValueError):
        return False
    return bool(
        data.get("builder") == builder
        and data.get("version") == version
        and data.get("size") == stat.st_size
        and data.get("mtime_ns") == stat.st_mtime_ns
    )


def _stamp(model_file: Path, builder: str, version: int) -> None:
    stat = model_file.stat()
    record = {
        "builder": builder,
        "version": version,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    (model_file.parent / _STAMP).write_text(json.dumps(record) + "\n")


def build_demo_repository(
    path: Path,
    *,
    models: Sequence[str] | None = None,
    force: bool = False,
    progress: Callable[[str, bool], None] | None = None,
) -> dict[str, bool]:
    """Write the demo models (version 1) and their config.yaml under ``path``.

    Returns ``{model: rebuilt}``; a model already written by the same builder version is
    kept unless ``force``. ``progress(model, rebuilt)`` is called after each model.
    """
    names = list(DEMO_MODELS if models is None else models)
    unknown = [n for n in names if n not in _BUILDERS]
    if unknown:
        raise ConfigError(
            f"models: unknown demo model(s) {', '.join(unknown)}; allowed: {', '.join(DEMO_MODELS)}"
        )
    root = Path(path)
    configs = _configs()
    done: dict[str, bool] = {}
    for name in names:
        version, builder = _BUILDERS[name]
        model_file = root / name / "1" / "model.onnx"
        config_file = root / name / "config.yaml"
        rebuild = force or not _is_current(model_file, name, version)
        if rebuild:
            builder(model_file)
            _stamp(model_file, name, version)
        if rebuild or not config_file.is_file():
            text = yaml.safe_dump(configs[name], sort_keys=False, default_flow_style=None)
            header = f"# {name}: EdgeTier demo model (random weights). Triton field names.\n"
            config_file.write_text(header + text)
        done[name] = rebuild
        if progress is not None:
            progress(name, rebuild)
    return done

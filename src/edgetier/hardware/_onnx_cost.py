"""FLOPs and bytes of an ONNX model per inference, from its graph and inferred shapes.

Multiply-accumulates are counted exactly for Conv, ConvTranspose, Gemm and MatMul (one MAC
= 2 FLOPs); every other node costs one FLOP per output element (activations, adds, pools:
a small share on convolutional networks). Bytes are the weights (read once per batch) plus
each intermediate tensor written once and read once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

from edgetier.errors import ModelLoadError

__all__ = ["ModelCost", "model_cost"]

# Nodes that only relabel a tensor: no arithmetic, and runtimes do not copy the data.
_FREE_OPS = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant", "Dropout"}
)


@dataclass(frozen=True)
class ModelCost:
    """Cost of one inference at batch 1, in FP32 storage."""

    flops: float
    macs: float
    weight_bytes: int
    activation_bytes: int
    by_op: dict[str, float] = field(default_factory=dict)

    def bytes_at(self, batch_size: int, bytes_per_element: float = 4.0) -> float:
        """Memory traffic of one batch, for storage of ``bytes_per_element`` (4 fp32, 2 fp16)."""
        scale = bytes_per_element / 4.0
        return (self.weight_bytes + batch_size * self.activation_bytes) * scale


def _static(model: onnx.ModelProto, batch_size: int) -> onnx.ModelProto:
    """Copy with every symbolic or unknown input dimension fixed (batch first, else 1)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = batch_size if axis == 0 else 1
    return model


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[list[int], int]]:
    """Tensor name -> (shape, element size in bytes) for every tensor with a known shape."""
    out: dict[str, tuple[list[int], int]] = {}
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for vi in values:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if any(d < 0 for d in dims):
            continue
        np_type = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        out[vi.name] = (dims, np.dtype(np_type).itemsize)
    for init in model.graph.initializer:
        np_type = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        out[init.name] = (list(init.dims), np.dtype(np_type).itemsize)
    return out


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[list[int], int]]) -> float | None:
    def shape(i: int, outputs: bool = False) -> list[int] | None:
        names = node.output if outputs else node.input
        if i >= len(names) or names[i] not in shapes:
            return None
        return shapes[names[i]][0]

    if node.op_type == "Conv":
        w, y = shape(1), shape(0, outputs=True)
        if w is None or y is None:
            return None
        # y: [N, Cout, *spatial]; w: [Cout, Cin/group, *kernel]
        return float(math.prod(y) * math.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        x, w = shape(0), shape(1)
        if w is None or x is None:
            return None
        # each input element is multiplied into Cout/group x kernel outputs
        return float(math.prod(x) * math.prod(w[1:]))
    if node.op_type == "Gemm":
        a, y = shape(0), shape(0, outputs=True)
        if a is None or y is None:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return float(math.prod(y) * k)
    if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a, y = shape(0), shape(0, outputs=True)
        if a is None or y is None:
            return None
        return float(math.prod(y) * a[-1])
    return None


def model_cost(path: str | Path | onnx.ModelProto) -> ModelCost:
    """FLOPs, MACs and bytes of one inference at batch 1 for an ONNX model."""
    try:
        model = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path))
        model = shape_inference.infer_shapes(_static(model, 1), data_prop=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read ONNX model {path}: {exc}") from exc
    shapes = _shapes(model)
    initializers = {i.name for i in model.graph.initializer}
    weight_bytes = sum(math.prod(shapes[n][0]) * shapes[n][1] for n in initializers)
    macs = 0.0
    flops = 0.0
    activation_bytes = 0
    by_op: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type in _FREE_OPS:
            continue
        node_macs = _node_macs(node, shapes)
        if node_macs is not None:
            node_flops = 2.0 * node_macs
            macs += node_macs
        else:
            node_flops = float(sum(math.prod(shapes[o][0]) for o in node.output if o in shapes))
        flops += node_flops
        by_op[node.op_type] = by_op.get(node.op_type, 0.0) + node_flops
        for o in node.output:
            if o in shapes:
                dims, size = shapes[o]
                activation_bytes += 2 * math.prod(dims) * size  # written once, read once
    return ModelCost(flops, macs, int(weight_bytes), int(activation_bytes), by_op)

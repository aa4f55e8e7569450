"""A small TFLite model written by hand, for the LiteRT engine's tests (no converter).

The interpreter packages carry no converter, so the flatbuffer is written directly with
the ``tflite`` schema package (in the ``test`` extra)::

    weights = make_tflite_mlp(repo / "mlp" / "1" / "model.tflite")
    expected = tflite_mlp_reference(weights, x)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_tflite_mlp", "tflite_mlp_reference"]

_FLOAT32 = 0  # tflite.TensorType.FLOAT32
_FULLY_CONNECTED = 9  # tflite.BuiltinOperator.FULLY_CONNECTED
_FC_OPTIONS = 8  # tflite.BuiltinOptions.FullyConnectedOptions
_RELU = 1  # tflite.ActivationFunctionType.RELU


def make_tflite_mlp(
    path: Path,
    *,
    features: int = 16,
    hidden: int = 8,
    classes: int = 4,
    batch: int = -1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``x`` FP32 [N, features] -> FC + ReLU -> FC -> ``y`` FP32 [N, classes].

    ``batch=-1`` declares a dynamic first dimension (the interpreter's shape signature),
    a positive one a fixed batch. Returns the weights, for :func:`tflite_mlp_reference`.
    """
    import importlib

    import flatbuffers

    # the schema's modules (the package itself exports the reader classes of same names)
    def schema(name: str) -> Any:
        return importlib.import_module(f"tflite.{name}")

    Buffer, Model, Operator, OperatorCode, SubGraph, Tensor = map(
        schema, ("Buffer", "Model", "Operator", "OperatorCode", "SubGraph", "Tensor")
    )
    FullyConnectedOptions = schema("FullyConnectedOptions")

    rng = np.random.default_rng(seed)
    weights = {
        name: (rng.standard_normal(shape) * scale).astype(np.float32)
        for name, shape, scale in (
            ("w1", (hidden, features), 1 / np.sqrt(features)),
            ("b1", (hidden,), 0.1),
            ("w2", (classes, hidden), 1 / np.sqrt(hidden)),
            ("b2", (classes,), 0.1),
        )
    }
    b = flatbuffers.Builder(1024)

    def int_vector(start: Any, values: list[int]) -> int:
        start(b, len(values))
        for value in reversed(values):
            b.PrependInt32(value)
        return int(b.EndVector())

    # buffers: 0 is the empty sentinel; 1.. hold the weights; activations use 0
    buffer_offsets = []
    for data in [None, *weights.values()]:
        data_offset = None if data is None else b.CreateByteVector(data.tobytes())
        Buffer.BufferStart(b)
        if data_offset is not None:
            Buffer.BufferAddData(b, data_offset)
        buffer_offsets.append(Buffer.BufferEnd(b))
    rows = batch if batch > 0 else 1
    tensors = [  # name, shape, buffer
        ("x", [rows, features], 0),
        ("w1", [hidden, features], 1),
        ("b1", [hidden], 2),
        ("h", [rows, hidden], 0),
        ("w2", [classes, hidden], 3),
        ("b2", [classes], 4),
        ("y", [rows, classes], 0),
    ]
    tensor_offsets = []
    for name, shape, buffer in tensors:
        name_offset = b.CreateString(name)
        shape_offset = int_vector(Tensor.TensorStartShapeVector, shape)
        signature = [batch, *shape[1:]] if name in ("x", "h", "y") else shape
        signature_offset = int_vector(Tensor.TensorStartShapeSignatureVector, signature)
        Tensor.TensorStart(b)
        Tensor.TensorAddShape(b, shape_offset)
        Tensor.TensorAddShapeSignature(b, signature_offset)
        Tensor.TensorAddType(b, _FLOAT32)
        Tensor.TensorAddBuffer(b, buffer)
        Tensor.TensorAddName(b, name_offset)
        tensor_offsets.append(Tensor.TensorEnd(b))
    operator_offsets = []
    for inputs, output, activation in (([0, 1, 2], 3, _RELU), ([3, 4, 5], 6, 0)):
        FullyConnectedOptions.FullyConnectedOptionsStart(b)
        FullyConnectedOptions.FullyConnectedOptionsAddFusedActivationFunction(b, activation)
        options = FullyConnectedOptions.FullyConnectedOptionsEnd(b)
        inputs_offset = int_vector(Operator.OperatorStartInputsVector, inputs)
        outputs_offset = int_vector(Operator.OperatorStartOutputsVector, [output])
        Operator.OperatorStart(b)
        Operator.OperatorAddOpcodeIndex(b, 0)
        Operator.OperatorAddInputs(b, inputs_offset)
        Operator.OperatorAddOutputs(b, outputs_offset)
        Operator.OperatorAddBuiltinOptionsType(b, _FC_OPTIONS)
        Operator.OperatorAddBuiltinOptions(b, options)
        operator_offsets.append(Operator.OperatorEnd(b))

    def table_vector(start: Any, offsets: list[int]) -> int:
        start(b, len(offsets))
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return int(b.EndVector())

    graph_tensors = table_vector(SubGraph.SubGraphStartTensorsVector, tensor_offsets)
    graph_inputs = int_vector(SubGraph.SubGraphStartInputsVector, [0])
    graph_outputs = int_vector(SubGraph.SubGraphStartOutputsVector, [6])
    graph_operators = table_vector(SubGraph.SubGraphStartOperatorsVector, operator_offsets)
    graph_name = b.CreateString("main")
    SubGraph.SubGraphStart(b)
    SubGraph.SubGraphAddTensors(b, graph_tensors)
    SubGraph.SubGraphAddInputs(b, graph_inputs)
    SubGraph.SubGraphAddOutputs(b, graph_outputs)
    SubGraph.SubGraphAddOperators(b, graph_operators)
    SubGraph.SubGraphAddName(b, graph_name)
    subgraph = SubGraph.SubGraphEnd(b)

    OperatorCode.OperatorCodeStart(b)
    OperatorCode.OperatorCodeAddDeprecatedBuiltinCode(b, _FULLY_CONNECTED)
    OperatorCode.OperatorCodeAddBuiltinCode(b, _FULLY_CONNECTED)
    OperatorCode.OperatorCodeAddVersion(b, 1)
    opcode = OperatorCode.OperatorCodeEnd(b)

    codes = table_vector(Model.ModelStartOperatorCodesVector, [opcode])
    subgraphs = table_vector(Model.ModelStartSubgraphsVector, [subgraph])
    buffers = table_vector(Model.ModelStartBuffersVector, buffer_offsets)
    description = b.CreateString("edgetier test MLP")
    Model.ModelStart(b)
    Model.ModelAddVersion(b, 3)
    Model.ModelAddOperatorCodes(b, codes)
    Model.ModelAddSubgraphs(b, subgraphs)
    Model.ModelAddDescription(b, description)
    Model.ModelAddBuffers(b, buffers)
    b.Finish(Model.ModelEnd(b), file_identifier=b"TFL3")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(b.Output()))
    return weights


def tflite_mlp_reference(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """What the model computes, in numpy."""
    hidden = np.maximum(x @ weights["w1"].T + weights["b1"], 0)
    return np.asarray(hidden @ weights["w2"].T + weights["b2"], dtype=np.float32)

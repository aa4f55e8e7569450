"""Complete a model config from its model file, as Triton's auto-complete does.

What the config leaves out (inputs, outputs, max_batch_size) is read from the file by the
platform's engine (the ONNX graph, the TFLite interpreter); what it gives is checked
against the file, and a disagreement is a ConfigError that says which tensor and what the
graph has::

    config = complete_config(partial, Path("models/m/1/model.onnx"), source="models/m")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgetier.errors import ConfigError, ModelLoadError
from edgetier.runtime._config import (
    DEFAULT_MAX_BATCH_SIZE,
    ModelConfig,
    TensorConfig,
    parse_config,
)
from edgetier.runtime._datatypes import datatype_of_onnx, triton_name
from edgetier.runtime._engine import GraphTensor
from edgetier.runtime._registry import engine_class, platform_for_file

__all__ = ["GraphTensor", "complete_config", "config_for_file", "read_graph_io"]


def read_graph_io(path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """The graph's real inputs (initializers left out) and outputs."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: file not found") from None
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a valid ONNX model: {exc}") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [_tensor(v, path) for v in graph.input if v.name not in initializers]
    outputs = [_tensor(v, path) for v in graph.output]
    return inputs, outputs


def _tensor(value: onnx.ValueInfoProto, path: Path) -> GraphTensor:
    tensor_type = value.type.tensor_type
    try:
        data_type = triton_name(datatype_of_onnx(tensor_type.elem_type))
    except Exception:
        raise ModelLoadError(
            f"{path}: tensor {value.name!r} has ONNX element type {tensor_type.elem_type}, "
            "which EdgeTier does not serve"
        ) from None
    shape: list[int] | None = None
    if tensor_type.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    return GraphTensor(value.name, data_type, shape)


def complete_config(config: ModelConfig, model_path: Path, *, source: str) -> ModelConfig:
    """Fill what ``config`` leaves out from the file at ``model_path`` and check the rest."""
    inputs, outputs = engine_class(config.platform).read_io(model_path)
    if "max_batch_size" in config.model_fields_set:
        max_batch_size = config.max_batch_size
    else:
        max_batch_size = DEFAULT_MAX_BATCH_SIZE if _can_batch(inputs + outputs) else 0
    update: dict[str, object] = {"max_batch_size": max_batch_size}
    for field, graph_tensors in (("input", inputs), ("output", outputs)):
        given: list[TensorConfig] = getattr(config, field)
        if given:
            _check(field, given, graph_tensors, max_batch_size, source, model_path)
        else:
            update[field] = [
                _from_graph(field, t, max_batch_size, source, model_path) for t in graph_tensors
            ]
    completed = config.model_copy(update=update)
    # Re-validate: the graph may have made a cross-field rule fail (e.g. max_batch_size 0
    # with preferred batch sizes).
    return parse_config(completed.model_dump(exclude_unset=False), source=source)


def config_for_file(model_path: Path, *, name: str, **fields: Any) -> ModelConfig:
    """A config for one model file outside a repository: ``fields``, the rest from the file.

    The platform follows from the file name (``.onnx``, ``.tflite``) unless ``fields``
    name it. The pipelines use it to run a model file through the same engines as the
    server.
    """
    source = str(model_path)
    platform = platform_for_file(model_path)
    if platform is not None and "platform" not in fields and "backend" not in fields:
        fields = {**fields, "platform": platform}
    return complete_config(
        parse_config({**fields, "name": name}, source=source), model_path, source=source
    )


def _can_batch(tensors: list[GraphTensor]) -> bool:
    return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)


def _from_graph(
    field: str, tensor: GraphTensor, max_batch_size: int, source: str, model_path: Path
) -> TensorConfig:
    if tensor.shape is None:
        raise ConfigError(
            f"{source}: {field}: the graph {model_path} gives no shape for {tensor.name!r}; "
            f"list it under {field} with its dims"
        )
    dims = tensor.shape
    if max_batch_size > 0:
        if not dims or dims[0] != -1:
            raise ConfigError(
                f"{source}: max_batch_size: {max_batch_size} needs a dynamic first dimension "
                f"on {field} {tensor.name!r}, but the graph has shape {dims}; "
                "set max_batch_size: 0"
            )
        dims = dims[1:]
    return TensorConfig(name=tensor.name, data_type=tensor.data_type, dims=dims)


def _check(
    field: str,
    given: list[TensorConfig],
    graph_tensors: list[GraphTensor],
    max_batch_size: int,
    source: str,
    model_path: Path,
) -> None:
    by_name = {t.name: t for t in graph_tensors}
    for i, tensor in enumerate(given):
        where = f"{source}: {field}[{i}]"
        graph = by_name.get(tensor.name)
        if graph is None:
            raise ConfigError(
                f"{where}.name: the graph has no {field} {tensor.name!r}; "
                f"it has {', '.join(repr(n) for n in by_name) or 'none'}"
            )
        if tensor.data_type != graph.data_type:
            raise ConfigError(
                f"{where}.data_type: the graph has {graph.data_type} for {tensor.name!r}, "
                f"config says {tensor.data_type}"
            )
        if graph.shape is None:
            continue
        shape = [-1, *tensor.dims] if max_batch_size > 0 else list(tensor.dims)
        if max_batch_size > 0 and (not graph.shape or graph.shape[0] != -1):
            raise ConfigError(
                f"{source}: max_batch_size: {max_batch_size} needs a dynamic first dimension "
                f"on {field} {tensor.name!r}, but the graph has shape {graph.shape}"
            )
        if not _compatible(shape, graph.shape):
            shown = graph.shape[1:] if max_batch_size > 0 else graph.shape
            hint = ""
            if max_batch_size > 0 and len(tensor.dims) == len(graph.shape):
                hint = (
                    f"; leave out the batch dimension when max_batch_size > 0 "
                    f"(max_batch_size is {max_batch_size}): dims {tensor.dims[1:]}"
                )
            raise ConfigError(
                f"{where}.dims: {tensor.dims} does not fit the graph's {shown} "
                f"for {tensor.name!r} (-1 = any size){hint}"
            )
    if field == "input":
        named = {t.name for t in given}
        missing = [t.name for t in graph_tensors if t.name not in named]
        if missing:
            raise ConfigError(
                f"{source}: input: the graph also needs {', '.join(repr(n) for n in missing)}; "
                "list every graph input or none"
            )


def _compatible(config_shape: list[int], graph_shape: list[int]) -> bool:
    """The config may fix a dimension the graph leaves dynamic, never the reverse."""
    if len(config_shape) != len(graph_shape):
        return False
    return all(g == -1 or c == g for c, g in zip(config_shape, graph_shape, strict=True))

"""The LiteRT (TensorFlow Lite) engine, platform ``litert_tflite``: ``model.tflite`` files.

LiteRT is the runtime of ARM devices without an NVIDIA GPU. The interpreter comes from
``ai-edge-litert`` (``pip install 'edgetier[tflite]'``) or, where only that installs,
``tflite-runtime``. It runs on the CPU with its default delegate (XNNPACK) and
``optimization.intra_op_threads`` threads; a batch whose size differs from the last one
resizes the interpreter's inputs first, so a model with a dynamic first dimension batches::

    engine = LiteRTEngine.load(Path("models/m/1/model.tflite"), config, placements(config)[0])
    engine.run({"x": np.zeros((4, 16), np.float32)})["y"]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # the older package, where ai-edge-litert has no wheel
    from tflite_runtime.interpreter import Interpreter

from edgetier.errors import EdgeTierError, InvalidInputError, ModelLoadError, ModelNotReadyError
from edgetier.runtime._config import ModelConfig
from edgetier.runtime._datatypes import datatype_of, triton_name
from edgetier.runtime._engine import Engine, GraphTensor, Placement, TensorSpec

__all__ = ["LiteRTEngine"]

PROVIDER = "LiteRT CPU"
"""What ``engine.provider`` says for this engine: the interpreter on the CPU."""


def _interpreter(path: Path, threads: int | None) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except Exception as exc:  # ValueError for a file that is not a TFLite flatbuffer
        text = str(exc).strip().splitlines()
        raise ModelLoadError(
            f"{path}: LiteRT cannot load it: {text[0] if text else type(exc).__name__}"
        ) from None
    return interpreter


def _graph_tensor(detail: dict[str, Any], path: Path) -> GraphTensor:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "OSU":
        raise ModelLoadError(
            f"{path}: tensor {detail['name']!r} holds strings, which the LiteRT engine "
            "does not serve"
        )
    try:
        data_type = triton_name(datatype_of(dtype))
    except EdgeTierError:
        raise ModelLoadError(
            f"{path}: tensor {detail['name']!r} has type {dtype}, which EdgeTier does not serve"
        ) from None
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return GraphTensor(detail["name"], data_type, [int(d) for d in shape])


class LiteRTEngine(Engine):
    """One LiteRT interpreter. Interpreters are not thread-safe: runs take a lock."""

    platform: ClassVar[str] = "litert_tflite"

    @classmethod
    def read_io(cls, path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
        interpreter = _interpreter(Path(path), 1)
        inputs = [_graph_tensor(d, path) for d in interpreter.get_input_details()]
        outputs = [_graph_tensor(d, path) for d in interpreter.get_output_details()]
        return inputs, outputs

    @classmethod
    def load(cls, path: Path, config: ModelConfig, placement: Placement) -> LiteRTEngine:
        if placement.group.kind == "KIND_GPU":
            raise ModelLoadError(
                f"model {config.name!r}: platform litert_tflite runs on the CPU; "
                "instance_group kind KIND_GPU is not possible (use KIND_CPU or KIND_AUTO)"
            )
        threads = config.optimization.intra_op_threads or None
        return cls(_interpreter(Path(path), threads), config, path=Path(path))

    def __init__(self, interpreter: Any, config: ModelConfig, *, path: Path) -> None:
        self.name = config.name
        self.path = path
        self.provider = PROVIDER
        self.device_id = 0
        self.notes: list[str] = []
        self.inputs = [TensorSpec(t.name, t.datatype, config.full_shape(t)) for t in config.input]
        self.outputs = [TensorSpec(t.name, t.datatype, config.full_shape(t)) for t in config.output]
        self._interpreter = interpreter
        self._lock = threading.Lock()
        self._in = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        self._out = {d["name"]: d["index"] for d in interpreter.get_output_details()}
        self._shapes = {d["name"]: tuple(d["shape"]) for d in interpreter.get_input_details()}
        self._output_names = [t.name for t in self.outputs]
        self._closed = False

    def __repr__(self) -> str:
        return f"LiteRTEngine({self.name!r}, provider={self.provider!r})"

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = self._output_names if output_names is None else list(output_names)
        with self._lock:
            if self._closed:
                raise ModelNotReadyError(f"model {self.name!r}: engine is closed")
            interpreter = self._interpreter
            try:
                resized = False
                for name, array in inputs.items():
                    shape = tuple(array.shape)
                    if self._shapes.get(name) != shape:
                        interpreter.resize_tensor_input(self._in[name], list(shape))
                        self._shapes[name] = shape
                        resized = True
                if resized:
                    interpreter.allocate_tensors()
                for name, array in inputs.items():
                    interpreter.set_tensor(self._in[name], np.ascontiguousarray(array))
                interpreter.invoke()
                return {name: interpreter.get_tensor(self._out[name]) for name in names}
            except KeyError as exc:
                raise InvalidInputError(
                    f"model {self.name!r}: no tensor {exc.args[0]!r}; inputs: "
                    f"{', '.join(self._in)}; outputs: {', '.join(self._out)}"
                ) from None
            except (ValueError, RuntimeError) as exc:
                text = str(exc).strip().splitlines()
                raise InvalidInputError(
                    f"model {self.name!r}: {text[0] if text else type(exc).__name__}"
                ) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._interpreter = None

"""Engines: one loaded model version, one instance, on ONNX Runtime.

The provider order comes from ``optimization.execution_providers`` (TensorRT -> CUDA ->
CPU by default); providers this onnxruntime build lacks are skipped with one log line that
says what was asked for and what runs::

    engine = load_engine(Path("models/resnet50/1/model.onnx"), repo.config("resnet50"))
    engine.provider                          # "CPUExecutionProvider" on a CPU-only machine
    engine.run({"input": batch})["output"]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from edgetier.errors import (
    EdgeTierError,
    InvalidInputError,
    ModelLoadError,
    ModelNotReadyError,
)
from edgetier.runtime._config import InstanceGroup, ModelConfig

__all__ = ["PROVIDER_NAMES", "Engine", "OnnxEngine", "TensorSpec", "load_engine"]

logger = logging.getLogger("edgetier.runtime")

PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
"""Config spelling -> ONNX Runtime execution provider name."""

_GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


@dataclass(frozen=True)
class TensorSpec:
    """An engine's input or output: KServe datatype and full shape (batch dim included)."""

    name: str
    datatype: str
    shape: list[int]


class Engine(Protocol):
    """One loaded model version, one instance. ``run`` is thread-safe."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    provider: str

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


# -- provider planning ---------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    providers: list[tuple[str, dict[str, Any]]]  # (ORT name, options), in order
    missing: list[str]  # asked for, but this onnxruntime lacks them
    asked: list[str]  # every provider asked for, in order
    group: InstanceGroup
    device_id: int
    cuda_graphs: bool


def _placement(config: ModelConfig, instance: int) -> tuple[InstanceGroup, int]:
    """The instance group and GPU id of instance ``instance`` (Triton: count per GPU)."""
    index = instance
    for group in config.instance_group:
        gpus = group.gpus if group.kind != "KIND_CPU" else []
        size = group.count * max(1, len(gpus))
        if index < size:
            return group, (gpus[index // group.count] if gpus else 0)
        index -= size
    raise ModelLoadError(
        f"model {config.name!r}: instance {instance} is out of range; "
        f"instance_group gives {config.instance_count} instance(s)"
    )


def _fixed_shapes(config: ModelConfig) -> bool:
    tensors = [*config.input, *config.output]
    return all(-1 not in config.full_shape(t) for t in tensors)


def _cpu_threads(config: ModelConfig) -> int:
    """intra_op threads: as configured; 0 = ORT's default, or cores/instances if several."""
    opt = config.optimization
    if opt.intra_op_threads or config.instance_count <= 1:
        return opt.intra_op_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // config.instance_count)


def plan_providers(
    config: ModelConfig, *, instance: int = 0, available: Sequence[str] | None = None
) -> _Plan:
    """Providers to try, in order, with their options; and those asked for but absent."""
    available = list(ort.get_available_providers() if available is None else available)
    group, device_id = _placement(config, instance)
    opt = config.optimization
    wanted = ["cpu"] if group.kind == "KIND_CPU" else list(opt.execution_providers)
    cache_dir = opt.engine_cache_dir
    fixed = _fixed_shapes(config)
    providers: list[tuple[str, dict[str, Any]]] = []
    missing: list[str] = []
    for key in wanted:
        name = PROVIDER_NAMES[key]
        if name not in available:
            missing.append(name)
            continue
        options: dict[str, Any] = {}
        if key == "tensorrt":
            options = {
                "device_id": device_id,
                "trt_fp16_enable": opt.precision in ("fp16", "int8"),
                "trt_int8_enable": opt.precision == "int8",
            }
            if cache_dir:
                options.update(
                    trt_engine_cache_enable=True,
                    trt_engine_cache_path=cache_dir,
                    trt_timing_cache_enable=True,
                    trt_timing_cache_path=cache_dir,
                )
        elif key == "cuda":
            options = {"device_id": device_id}
            if opt.cuda_graphs and fixed:
                options["enable_cuda_graph"] = True
        providers.append((name, options))
    graphs = (
        opt.cuda_graphs and fixed and bool(providers) and providers[0][0] == "CUDAExecutionProvider"
    )
    return _Plan(providers, missing, [PROVIDER_NAMES[k] for k in wanted], group, device_id, graphs)


# -- loading -------------------------------------------------------------------------


def load_engine(path: Path, config: ModelConfig, *, instance: int = 0) -> OnnxEngine:
    """Load one instance of the model at ``path`` as ``config`` describes it.

    Raises ModelLoadError for a missing or corrupt file (with ONNX Runtime's reason) and
    when none of the configured providers is available.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model {config.name!r}: {path} does not exist")
    plan = plan_providers(config, instance=instance)
    label = f"model {config.name!r} instance {instance}"
    if not plan.providers:
        raise ModelLoadError(
            f"{label}: none of optimization.execution_providers "
            f"{config.optimization.execution_providers} is available in this onnxruntime "
            f"(it has {', '.join(ort.get_available_providers())}); add 'cpu' or install "
            "onnxruntime-gpu"
        )
    plan = _with_cache_dir(plan, path)
    options = _session_options(config)
    try:
        session = ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=[name for name, _ in plan.providers],
            provider_options=[opts for _, opts in plan.providers],
        )
    except Exception as exc:
        raise ModelLoadError(f"{label}: ONNX Runtime cannot load {path}: {_reason(exc)}") from None
    actual = session.get_providers()[0]
    if actual != plan.asked[0]:
        reasons = []
        if plan.missing:
            reasons.append(
                f"{', '.join(plan.missing)} asked for but not in this onnxruntime (it has "
                f"{', '.join(ort.get_available_providers())}; onnxruntime-gpu brings CUDA "
                "and TensorRT)"
            )
        if actual != plan.providers[0][0]:
            reasons.append(f"{plan.providers[0][0]} asked for but failed to start")
        logger.warning("%s: %s; running on %s", label, "; ".join(reasons), actual)
    else:
        logger.info("%s: running on %s", label, actual)
    return OnnxEngine(session, config, plan=plan, path=path)


def _with_cache_dir(plan: _Plan, model_path: Path) -> _Plan:
    """Resolve a relative engine cache dir against the model directory and create it."""
    providers = []
    for name, options in plan.providers:
        if "trt_engine_cache_path" in options:
            cache = Path(options["trt_engine_cache_path"])
            if not cache.is_absolute():
                cache = model_path.parent.parent / cache
            cache.mkdir(parents=True, exist_ok=True)
            options = {
                **options,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_path": str(cache),
            }
        providers.append((name, options))
    return dataclasses.replace(plan, providers=providers)


def _session_options(config: ModelConfig) -> ort.SessionOptions:
    opt = config.optimization
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are for developers
    threads = _cpu_threads(config)
    if threads:
        options.intra_op_num_threads = threads
    if opt.inter_op_threads:
        options.inter_op_num_threads = opt.inter_op_threads
        if opt.inter_op_threads > 1:
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    # Intra-op threads that spin between runs steal the cores from the server's event loop
    # and the pipelines' decoders; EdgeTier turns spinning off unless the config asks for it.
    entries = {"session.intra_op.allow_spinning": "0"}
    # ORT session config entries in `parameters` are passed through.
    entries.update({k: v for k, v in config.parameters.items() if k.startswith("session.")})
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return options


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- running -------------------------------------------------------------------------


class _Closed:
    """Stands in for the session after close(): every call says the engine is gone."""

    def __init__(self, name: str) -> None:
        self._name = name

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelNotReadyError(f"model {self._name!r}: engine is closed")

    def run_with_iobinding(self, *args: Any, **kwargs: Any) -> Any:
        self.run()

    def io_binding(self) -> Any:
        self.run()


class OnnxEngine:
    """An ONNX Runtime session behind the Engine protocol.

    ``run`` is the hot path: it hands the arrays to ONNX Runtime (which releases the GIL and
    is thread-safe) and validates nothing; the caller has checked names, types and shapes.
    BYTES tensors are numpy object arrays of ``bytes``; ONNX string tensors carry UTF-8.
    """

    def __init__(self, session: Any, config: ModelConfig, *, plan: _Plan, path: Path) -> None:
        self.name = config.name
        self.path = path
        self._session = session
        self.provider: str = session.get_providers()[0]
        self.device_id = plan.device_id
        self.inputs = [TensorSpec(t.name, t.datatype, config.full_shape(t)) for t in config.input]
        self.outputs = [TensorSpec(t.name, t.datatype, config.full_shape(t)) for t in config.output]
        self._output_names = [t.name for t in self.outputs]
        self._bytes_inputs = [t.name for t in self.inputs if t.datatype == "BYTES"]
        self._bytes_outputs = frozenset(t.name for t in self.outputs if t.datatype == "BYTES")
        on_gpu = self.provider in _GPU_PROVIDERS
        has_bytes = bool(self._bytes_inputs or self._bytes_outputs)
        self._graph_runner: _CudaGraphRunner | None = None
        if on_gpu and plan.cuda_graphs and not has_bytes:
            self._graph_runner = _CudaGraphRunner(session, self, plan.device_id)
        self._io_binding = on_gpu and config.optimization.io_binding and not has_bytes
        self._device_type = "cuda"

    def __repr__(self) -> str:
        return f"OnnxEngine({self.name!r}, provider={self.provider!r})"

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch; returns the requested outputs (all when ``output_names`` is None)."""
        names = self._output_names if output_names is None else list(output_names)
        feed = inputs if type(inputs) is dict else dict(inputs)
        if self._bytes_inputs:
            feed = _bytes_to_str(feed, self._bytes_inputs)
        try:
            if self._graph_runner is not None:
                return self._graph_runner.run(feed, names)
            if self._io_binding:
                return self._run_bound(feed, names)
            results = self._session.run(names, feed)
        except EdgeTierError:
            raise
        except Exception as exc:
            raise _map_run_error(self.name, exc) from None
        out = dict(zip(names, results, strict=True))
        if self._bytes_outputs:
            for name in self._bytes_outputs.intersection(out):
                out[name] = _str_to_bytes(out[name])
        return out

    def _run_bound(self, feed: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        # One binding per call: IOBinding objects are not thread-safe. Inputs are copied to
        # the device once and outputs are allocated there by ORT, then copied back once.
        binding = self._session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in names:
            binding.bind_output(name, self._device_type, self.device_id)
        self._session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))

    def close(self) -> None:
        """Release the session; later calls to run raise ModelNotReadyError."""
        self._session = _Closed(self.name)
        self._graph_runner = None


class _CudaGraphRunner:
    """CUDA graphs need inputs and outputs at fixed device addresses: bind them once.

    The buffers are shared, so runs are serialised with a lock (one instance runs one
    batch at a time anyway; more instances give parallelism).
    """

    def __init__(self, session: Any, engine: OnnxEngine, device_id: int) -> None:
        from edgetier.runtime._datatypes import to_numpy_dtype

        self._session = session
        self._lock = threading.Lock()
        self._binding = session.io_binding()
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}
        for spec in engine.inputs:
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                spec.shape, to_numpy_dtype(spec.datatype), "cuda", device_id
            )
            self._binding.bind_ortvalue_input(spec.name, value)
            self._inputs[spec.name] = value
        for spec in engine.outputs:
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                spec.shape, to_numpy_dtype(spec.datatype), "cuda", device_id
            )
            self._binding.bind_ortvalue_output(spec.name, value)
            self._outputs[spec.name] = value

    def run(self, feed: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            for name, array in feed.items():
                self._inputs[name].update_inplace(np.ascontiguousarray(array))
            self._session.run_with_iobinding(self._binding)
            return {name: self._outputs[name].numpy() for name in names}


def _bytes_to_str(feed: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    feed = dict(feed)
    for name in names:
        array = feed.get(name)
        if array is None:
            continue
        try:
            flat = [v.decode() if isinstance(v, bytes) else v for v in array.ravel()]
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"input {name!r}: BYTES element is not valid UTF-8 ({exc.reason} at byte "
                f"{exc.start}); ONNX string tensors carry UTF-8 text"
            ) from None
        converted = np.empty(array.shape, dtype=object)
        converted.ravel()[:] = flat
        feed[name] = converted
    return feed


def _str_to_bytes(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    out.ravel()[:] = [v.encode() if isinstance(v, str) else v for v in array.ravel()]
    return out


def _map_run_error(name: str, exc: Exception) -> EdgeTierError:
    kind = type(exc).__name__
    if kind in ("InvalidArgument", "InvalidGraph") or isinstance(exc, (ValueError, TypeError)):
        return InvalidInputError(f"model {name!r}: {_reason(exc)}")
    return EdgeTierError(f"model {name!r}: inference failed: {_reason(exc)}")

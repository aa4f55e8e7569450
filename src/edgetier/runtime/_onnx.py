"""The ONNX Runtime engine (platform ``onnxruntime_onnx``): TensorRT, CUDA and CPU.

The provider order comes from ``optimization.execution_providers`` (TensorRT -> CUDA ->
CPU by default). ONNX Runtime's own fallback is turned off: when a provider fails to
start, EdgeTier retries without it, keeping every other provider's options (``device_id``,
caches), and says so in the log and in ``engine.notes``. ``engine.provider`` is where the
nodes run, read from the session's node assignment, not the first provider registered::

    engine = OnnxEngine.load(path, config, placements(config)[0])
    engine.provider, engine.node_counts     # "CUDAExecutionProvider", {"CUDA...": 120, ...}
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from edgetier.errors import (
    EdgeTierError,
    InvalidInputError,
    ModelLoadError,
    ModelNotReadyError,
)
from edgetier.runtime._config import ModelConfig
from edgetier.runtime._engine import Engine, GraphTensor, Placement, TensorSpec, placements
from edgetier.runtime._providers import (
    GPU_PROVIDERS,
    PROVIDER_NAMES,
    note_node_providers,
)

__all__ = ["OnnxEngine", "plan_providers"]

logger = logging.getLogger("edgetier.runtime")

_CPU = PROVIDER_NAMES["cpu"]
_CUDA = PROVIDER_NAMES["cuda"]
_TRT = PROVIDER_NAMES["tensorrt"]

_MODEL_ERRORS = frozenset({"InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel"})
"""ONNX Runtime errors about the model itself: no other provider would do better."""

_GRAPH_CAPTURE = re.compile(r"graph capture|cuda ?graph", re.IGNORECASE)


# -- provider planning ---------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    providers: list[tuple[str, dict[str, Any]]]  # (ORT name, options), in order
    missing: list[str]  # asked for, but this onnxruntime lacks them
    asked: list[str]  # every provider asked for, in order
    placement: Placement
    cuda_graphs: bool  # enable_cuda_graph is set on the CUDA provider
    notes: list[str]  # what the plan does differently from the config, in words

    @property
    def device_id(self) -> int:
        return self.placement.device_id


def _fixed_shapes(config: ModelConfig) -> bool:
    tensors = [*config.input, *config.output]
    return all(-1 not in config.full_shape(t) for t in tensors)


def _cpu_threads(config: ModelConfig, instances: int | None = None) -> int:
    """intra_op threads: as configured; 0 = ORT's default, or cores/instances if several."""
    opt = config.optimization
    count = config.instance_count if instances is None else instances
    if opt.intra_op_threads or count <= 1:
        return opt.intra_op_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // count)


def _graphs_refusal(config: ModelConfig, providers: list[str]) -> str | None:
    """Why CUDA graphs cannot hold for this plan; None when they can."""
    if not providers or providers[0] != _CUDA:
        if _TRT in providers and _CUDA in providers:
            return "TensorRT runs before CUDA (graphs need every node on CUDA)"
        return "CUDA does not run first" if _CUDA in providers else "CUDA is not in use"
    if not _fixed_shapes(config):
        return "shapes are not fixed (max_batch_size > 0 or a -1 dim); graphs need them"
    if any(t.datatype == "BYTES" for t in [*config.input, *config.output]):
        return "BYTES tensors live on the CPU"
    return None


def plan_providers(
    config: ModelConfig,
    *,
    instance: int = 0,
    available: Sequence[str] | None = None,
    placement: Placement | None = None,
) -> _Plan:
    """Providers to try, in order, with their options; and those asked for but absent."""
    available = list(ort.get_available_providers() if available is None else available)
    if placement is None:
        placement = placements(config)[instance]
    device_id = placement.device_id
    opt = config.optimization
    wanted = ["cpu"] if placement.cpu_only else list(opt.execution_providers)
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
            if opt.engine_cache_dir:
                options.update(
                    trt_engine_cache_enable=True,
                    trt_engine_cache_path=opt.engine_cache_dir,
                    trt_timing_cache_enable=True,
                    trt_timing_cache_path=opt.engine_cache_dir,
                )
        elif key == "cuda":
            options = {"device_id": device_id}
        providers.append((name, options))
    notes: list[str] = []
    graphs = False
    if opt.cuda_graphs and not placement.cpu_only:
        refusal = _graphs_refusal(config, [name for name, _ in providers])
        if refusal is None:
            providers[0][1]["enable_cuda_graph"] = True
            graphs = True
        else:
            notes.append(f"cuda_graphs: off: {refusal}")
    asked = [PROVIDER_NAMES[k] for k in wanted]
    return _Plan(providers, missing, asked, placement, graphs, notes)


@functools.lru_cache(maxsize=64)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _with_cache_dir(plan: _Plan, model_path: Path, config: ModelConfig) -> _Plan:
    """Give each version its own TensorRT engine cache, keyed by the file's content.

    ONNX Runtime's cache key hashes the file name, tensor and node names and the library
    versions, not the weights, and a TensorRT engine embeds the weights: a retrained
    version in a shared directory would load the previous version's engine. So engines go
    under ``<cache>/<version>`` (relative caches live in the model directory; an absolute
    one is split by model too) and their file names start with the content digest. The
    timing cache holds layer timings, not weights, and stays shared.
    """
    providers = []
    for name, options in plan.providers:
        if "trt_engine_cache_path" in options:
            base = Path(options["trt_engine_cache_path"])
            # relative: inside the model directory; absolute: shared, so split by model
            base = base / config.name if base.is_absolute() else model_path.parent.parent / base
            engines = base / model_path.parent.name
            engines.mkdir(parents=True, exist_ok=True)
            stat = model_path.stat()
            digest = _content_digest(str(model_path), stat.st_size, stat.st_mtime_ns)
            options = {
                **options,
                "trt_engine_cache_path": str(engines),
                "trt_engine_cache_prefix": f"edgetier_{digest}",
                "trt_timing_cache_path": str(base),
            }
        providers.append((name, options))
    return dataclasses.replace(plan, providers=providers)


# -- loading -------------------------------------------------------------------------


def _session_options(config: ModelConfig, instances: int) -> ort.SessionOptions:
    opt = config.optimization
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: EdgeTier reports placement itself
    threads = _cpu_threads(config, instances)
    if threads:
        options.intra_op_num_threads = threads
    if opt.inter_op_threads:
        options.inter_op_num_threads = opt.inter_op_threads
        if opt.inter_op_threads > 1:
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    # Intra-op threads that spin between runs steal the cores from the server's event loop
    # and the pipelines' decoders; EdgeTier turns spinning off unless the config asks for it.
    entries = {
        "session.intra_op.allow_spinning": "0",
        # where each node runs, for engine.provider and the placement log line
        "session.record_ep_graph_assignment_info": "1",
    }
    # ORT session config entries in `parameters` are passed through.
    entries.update({k: v for k, v in config.parameters.items() if k.startswith("session.")})
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return options


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _new_session(
    path: Path, options: ort.SessionOptions, providers: list[tuple[str, dict[str, Any]]]
) -> Any:
    """One InferenceSession with ONNX Runtime's silent fallback turned off.

    Left on, ONNX Runtime answers a provider that fails to start by retrying with
    [CUDA, CPU] and no provider options at all: every instance on GPU 0, no caches.
    """
    session = ort.InferenceSession(
        str(path),
        sess_options=options,
        providers=[name for name, _ in providers],
        provider_options=[opts for _, opts in providers],
        enable_fallback=0,
    )
    disable = getattr(session, "disable_fallback", None)
    if disable is not None:
        disable()  # the same fallback exists for run(): off too
    return session


def _options_lost(session: Any, providers: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """GPU providers that run with another device than asked (ORT fell back silently)."""
    try:
        given = session.get_provider_options()
    except Exception:
        return []
    lost = []
    for name, options in providers:
        if name not in GPU_PROVIDERS or name not in given or "device_id" not in options:
            continue
        if str(given[name].get("device_id", options["device_id"])) != str(options["device_id"]):
            lost.append(name)
    return lost


def _create_session(
    path: Path, config: ModelConfig, plan: _Plan, label: str, instances: int
) -> tuple[Any, list[tuple[str, dict[str, Any]]], list[str]]:
    """Create the session, falling back one provider at a time; returns what ran."""
    options = _session_options(config, instances)
    providers = [(name, dict(opts)) for name, opts in plan.providers]
    notes = list(plan.notes)
    failures: list[str] = []
    for _ in range(len(providers) + 2):
        try:
            session = _new_session(path, options, providers)
        except Exception as exc:
            reason = _reason(exc)
            if type(exc).__name__ in _MODEL_ERRORS:
                raise ModelLoadError(
                    f"{label}: ONNX Runtime cannot load {path}: {reason}"
                ) from None
            cuda = next((opts for name, opts in providers if name == _CUDA), None)
            if cuda and cuda.get("enable_cuda_graph") and _GRAPH_CAPTURE.search(reason):
                del cuda["enable_cuda_graph"]
                note = f"cuda_graphs: off: ONNX Runtime refused graph capture ({reason})"
                logger.warning("%s: %s", label, note)
                notes.append(note)
                continue
            failed = next((name for name, _ in providers if name in GPU_PROVIDERS), None)
            if failed is None:
                detail = "; ".join([*failures, reason]) if failures else reason
                raise ModelLoadError(
                    f"{label}: ONNX Runtime cannot load {path}: {detail}"
                ) from None
            failures.append(f"{failed}: {reason}")
            providers = [(n, o) for n, o in providers if n != failed]
            note = _fallback_note(failed, reason, providers)
            logger.warning("%s: %s", label, note)
            notes.append(note)
            continue
        registered = list(session.get_providers())
        lost = _options_lost(session, providers)
        if lost:  # an onnxruntime that ignored enable_fallback=0: redo it with the options
            providers = [(n, o) for n, o in providers if n in registered and n not in lost]
            note = f"{', '.join(lost)} came up without its options (ONNX Runtime's fallback)"
            failures.append(note)
            notes.append(note)
            continue
        for name, _ in providers:
            if name not in registered:  # created without it: ORT logs why, at its own level
                kept = [n for n, _ in providers if n in registered]
                note = _fallback_note(name, "ONNX Runtime could not create it", kept)
                logger.warning("%s: %s", label, note)
                notes.append(note)
        return session, [(n, o) for n, o in providers if n in registered], notes
    raise ModelLoadError(
        f"{label}: ONNX Runtime cannot load {path}: every provider failed: {'; '.join(failures)}"
    )


def _fallback_note(failed: str, reason: str, rest: Sequence[Any]) -> str:
    names = [item[0] if isinstance(item, tuple) else item for item in rest]
    return (
        f"{failed} failed to start ({reason}); running on {', '.join(names) or 'nothing'} "
        "with their own options"
    )


def _node_counts(session: Any) -> dict[str, int] | None:
    """Nodes per provider, from the session's assignment record (ORT >= 1.23)."""
    get = getattr(session, "get_provider_graph_assignment_info", None)
    if get is None:
        return None
    try:
        subgraphs = get()
    except Exception:
        return None
    counts: dict[str, int] = {}
    for sub in subgraphs:
        counts[sub.ep_name] = counts.get(sub.ep_name, 0) + len(sub.get_nodes())
    return counts or None


def _off_provider_ops(session: Any, provider: str, limit: int = 5) -> list[str]:
    ops: list[str] = []
    try:
        for sub in session.get_provider_graph_assignment_info():
            if sub.ep_name != provider:
                ops.extend(node.op_type for node in sub.get_nodes())
    except Exception:
        return []
    unique = list(dict.fromkeys(ops))
    return unique[:limit] + (["..."] if len(unique) > limit else [])


def _main_provider(counts: dict[str, int] | None, registered: list[str]) -> str:
    """The provider that runs the most nodes (ties: the one registered first)."""
    if not counts:
        return registered[0]
    order = {name: i for i, name in enumerate(registered)}
    return max(counts, key=lambda name: (counts[name], -order.get(name, len(order))))


# -- the engine ----------------------------------------------------------------------


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


class OnnxEngine(Engine):
    """An ONNX Runtime session behind the Engine interface.

    ``run`` is the hot path: it hands the arrays to ONNX Runtime (which releases the GIL and
    is thread-safe) and validates nothing; the caller has checked names, types and shapes.
    BYTES tensors are numpy object arrays of ``bytes``; ONNX string tensors carry UTF-8.
    """

    platform: ClassVar[str] = "onnxruntime_onnx"

    @classmethod
    def read_io(cls, path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
        from edgetier.runtime._autocomplete import read_graph_io

        return read_graph_io(path)

    @classmethod
    def can_use_gpu(cls, config: ModelConfig) -> bool:
        have = set(ort.get_available_providers())
        wanted = config.optimization.execution_providers
        return any(PROVIDER_NAMES[k] in have for k in wanted if PROVIDER_NAMES[k] in GPU_PROVIDERS)

    @classmethod
    def load(cls, path: Path, config: ModelConfig, placement: Placement) -> OnnxEngine:
        path = Path(path)
        label = f"model {config.name!r} instance {placement.instance}"
        if not path.is_file():
            raise ModelLoadError(f"model {config.name!r}: {path} does not exist")
        have = ort.get_available_providers()
        plan = plan_providers(config, available=have, placement=placement)
        if not plan.providers:
            raise ModelLoadError(
                f"{label}: none of optimization.execution_providers "
                f"{config.optimization.execution_providers} is available in this onnxruntime "
                f"(it has {', '.join(have)}); add 'cpu' or install onnxruntime-gpu"
            )
        plan = _with_cache_dir(plan, path, config)
        instances = len(placements(config))
        session, running, notes = _create_session(path, config, plan, label, instances)
        graphs = any(o.get("enable_cuda_graph") for _, o in running)
        plan = dataclasses.replace(plan, providers=running, cuda_graphs=graphs, notes=notes)
        engine = cls(session, config, plan=plan, path=path)
        if plan.missing:
            note_node_providers(plan.missing, engine.provider, have)
        counts = engine.node_counts or {}
        if len(counts) > 1:
            ops = _off_provider_ops(session, engine.provider)
            logger.warning(
                "%s: nodes run on more than one provider: %s (off %s: %s); ONNX Runtime "
                "puts shape ops on the CPU on purpose, other ops lack a kernel there",
                label,
                ", ".join(f"{n} on {p}" for p, n in counts.items()),
                engine.provider,
                ", ".join(ops),
            )
        logger.debug("%s: running on %s", label, engine.provider)
        return engine

    def __init__(self, session: Any, config: ModelConfig, *, plan: _Plan, path: Path) -> None:
        self.name = config.name
        self.path = path
        self._session = session
        registered = list(session.get_providers())
        self.node_counts = _node_counts(session)
        self.provider = _main_provider(self.node_counts, registered)
        self.device_id = plan.device_id
        self.notes = list(plan.notes)
        self.provider_options = dict(plan.providers)
        self.inputs = [TensorSpec(t.name, t.datatype, config.full_shape(t)) for t in config.input]
        self.outputs = [TensorSpec(t.name, t.datatype, config.full_shape(t)) for t in config.output]
        self._output_names = [t.name for t in self.outputs]
        self._bytes_inputs = [t.name for t in self.inputs if t.datatype == "BYTES"]
        self._bytes_outputs = frozenset(t.name for t in self.outputs if t.datatype == "BYTES")
        on_gpu = self.provider in GPU_PROVIDERS
        has_bytes = bool(self._bytes_inputs or self._bytes_outputs)
        self.cuda_graphs = on_gpu and plan.cuda_graphs and not has_bytes
        self._graph_runner: _CudaGraphRunner | None = None
        self._graph_lock = threading.Lock()
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
            if self.cuda_graphs:
                return self._graphs().run(feed, names)
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

    def _graphs(self) -> _CudaGraphRunner:
        runner = self._graph_runner
        if runner is None:
            with self._graph_lock:
                if self._graph_runner is None:
                    self._graph_runner = _CudaGraphRunner(self._session, self, self.device_id)
                runner = self._graph_runner
        return runner

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
        self.cuda_graphs = False
        self._io_binding = False


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
    reason = _reason(exc)
    if _GRAPH_CAPTURE.search(reason):
        return EdgeTierError(
            f"model {name!r}: CUDA graph capture failed: {reason}; set "
            "optimization.cuda_graphs: false for this model"
        )
    if kind in ("InvalidArgument", "InvalidGraph") or isinstance(exc, (ValueError, TypeError)):
        return InvalidInputError(f"model {name!r}: {reason}")
    return EdgeTierError(f"model {name!r}: inference failed: {reason}")

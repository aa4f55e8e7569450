"""Fixtures for the runtime tests: tiny models written to tmp_path, never downloaded."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as C

from edgetier.synthetic import make_identity, make_simple, make_small


def make_tiny_cnn(
    path: Path, *, seed: int = 0, batch: str | int = "batch", channels: int = 8, size: int = 16
) -> Path:
    """x FP32 [N, 3, size, size] -> conv, relu, conv, relu, global pool, gemm -> y [N, 4].

    ``channels`` wide (8 by default; wider ones give TensorRT reason to pick FP16 kernels).
    """
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        array = rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2 / fan_in))
        return numpy_helper.from_array(array, name)

    inits = [
        weight("w1", channels, 3, 3, 3),
        weight("b1", channels),
        weight("w2", channels, channels, 3, 3),
        weight("b2", channels),
        weight("fc", 4, channels),
        weight("fcb", 4),
    ]
    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=pads),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=pads),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


ModelMaker = Callable[..., Path]


@pytest.fixture
def make_cnn() -> ModelMaker:
    """The tiny conv net builder (a fixture, so tests need not import conftest)."""
    return make_tiny_cnn


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def add_model(repo_root: Path) -> Callable[..., Path]:
    """add_model(name, maker=make_small, versions=(1,), config=None) -> model dir."""

    makers: dict[str, ModelMaker] = {
        "small": make_small,
        "simple": make_simple,
        "identity": make_identity,
        "cnn": make_tiny_cnn,
    }

    def add(
        name: str,
        kind: str = "small",
        *,
        versions: tuple[int, ...] = (1,),
        config: str | None = None,
    ) -> Path:
        model_dir = repo_root / name
        for version in versions:
            makers[kind](model_dir / str(version) / "model.onnx")
        if config is not None:
            (model_dir / "config.yaml").write_text(config)
        return model_dir

    return add


# -- GPUs and ONNX Runtime's GPU providers, faked the way the real ones behave ------------


class FakeNvml:
    """The few pynvml calls the runtime makes, with a chosen device count."""

    def __init__(self, count: int) -> None:
        self.count = count

    def nvmlInit(self) -> None:
        if self.count < 0:
            import pynvml

            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlShutdown(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _fresh_node_state() -> Iterator[None]:
    """The GPU count and the once-per-node log line are per process: reset around tests."""
    from edgetier.runtime._providers import _forget_notes, visible_gpu_count

    visible_gpu_count.cache_clear()
    _forget_notes()
    yield
    visible_gpu_count.cache_clear()
    _forget_notes()


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """gpus(n): NVML sees n GPUs (-1: NVML missing); CUDA_VISIBLE_DEVICES unset."""
    from edgetier.runtime._providers import visible_gpu_count

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def set_count(count: int) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(count))
        visible_gpu_count.cache_clear()

    return set_count


_REAL_SESSION = ort.InferenceSession
ALL_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
GRAPH_CAPTURE_REFUSED = (
    "This session cannot use the graph capture feature as requested by the user as all "
    "compute graph nodes have not been partitioned to the CUDA EP."
)


@dataclass
class Attempt:
    """One InferenceSession(...) call: what it was given and how it ended."""

    providers: list[str]
    options: list[dict[str, Any]]
    kwargs: dict[str, Any]
    outcome: str = "created"  # or the error text


@dataclass
class FakeOrt:
    """onnxruntime's GPU behaviour on a CPU machine, for one test.

    ``available``: what get_available_providers() lists. ``fail``: provider -> the
    RuntimeError text its creation raises (the TensorRT provider of an onnxruntime-gpu
    wheel without libnvinfer). ``skip``: providers ONNX Runtime cannot create but
    silently leaves out (it logs an error and goes on, as 1.16+ does). ``cpu_ops``: op
    types no GPU provider takes (they run on the CPU provider). Graph capture is refused,
    with ONNX Runtime's error class and text, when any node would run outside CUDA.
    Inference runs on a real CPU session of the same file.
    """

    available: list[str] = field(default_factory=lambda: list(ALL_PROVIDERS))
    fail: dict[str, str] = field(default_factory=dict)
    skip: set[str] = field(default_factory=set)
    cpu_ops: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def created(self) -> list[Attempt]:
        return [a for a in self.attempts if a.outcome == "created"]

    def session_class(self) -> type:
        fake = self

        class FakeInferenceSession:
            def __init__(
                self,
                path: str,
                sess_options: Any = None,
                providers: list[str] | None = None,
                provider_options: list[dict[str, Any]] | None = None,
                **kwargs: Any,
            ) -> None:
                self._enable_fallback = int(kwargs.get("enable_fallback", 1)) == 1
                attempt = Attempt(list(providers or []), list(provider_options or []), kwargs)
                fake.attempts.append(attempt)
                names = list(providers or [])
                # ONNX Runtime's own fallback (onnxruntime_inference_collection.py)
                if "CUDAExecutionProvider" in names and "TensorrtExecutionProvider" in names:
                    self._fallback = ["CUDAExecutionProvider", "CPUExecutionProvider"]
                else:
                    self._fallback = ["CPUExecutionProvider"]
                try:
                    self._create(path, sess_options, names, provider_options)
                except (ValueError, RuntimeError) as exc:
                    attempt.outcome = str(exc)
                    if not self._enable_fallback:
                        raise
                    retry = Attempt(list(self._fallback), [], {"fallback_of": attempt})
                    fake.attempts.append(retry)
                    self._create(path, sess_options, self._fallback, None)
                    self._enable_fallback = False
                except Exception as exc:
                    attempt.outcome = str(exc)
                    raise

            def _create(
                self,
                path: str,
                sess_options: Any,
                names: list[str],
                provider_options: list[dict[str, Any]] | None,
            ) -> None:
                options = list(provider_options or [{} for _ in names])
                registered: list[tuple[str, dict[str, Any]]] = []
                for name, opts in zip(names, options, strict=True):
                    if name not in fake.available:
                        continue  # ORT warns "not in available provider names" and skips
                    if name in fake.fail:
                        raise RuntimeError(fake.fail[name])
                    if name in fake.skip:
                        continue
                    registered.append((name, opts))
                if not any(n == "CPUExecutionProvider" for n, _ in registered):
                    registered.append(("CPUExecutionProvider", {}))
                # the real thing reads the file: a corrupt one fails as ONNX Runtime does;
                # its node list stands in for the graph partitioning
                real_options = ort.SessionOptions()
                real_options.add_session_config_entry(
                    "session.record_ep_graph_assignment_info", "1"
                )
                self._real = _REAL_SESSION(path, real_options, providers=["CPUExecutionProvider"])
                nodes = [
                    node
                    for sub in self._real.get_provider_graph_assignment_info()
                    for node in sub.get_nodes()
                ]
                gpu = [n for n, _ in registered if n != "CPUExecutionProvider"]
                placed: dict[str, list[Any]] = {}
                for node in nodes:
                    where = (
                        gpu[0]
                        if gpu and node.op_type not in fake.cpu_ops
                        else "CPUExecutionProvider"
                    )
                    placed.setdefault(where, []).append(node)
                cuda = dict(registered).get("CUDAExecutionProvider", {})
                graphs = str(cuda.get("enable_cuda_graph", "0")).lower() in ("1", "true")
                if graphs and set(placed) - {"CUDAExecutionProvider"}:
                    raise C.Fail(GRAPH_CAPTURE_REFUSED)
                self._registered = registered
                self._placed = placed

            def get_providers(self) -> list[str]:
                return [n for n, _ in self._registered]

            def get_provider_options(self) -> dict[str, dict[str, str]]:
                out = {}
                for name, opts in self._registered:
                    given = {k: str(v) for k, v in opts.items()}
                    if name != "CPUExecutionProvider":
                        given.setdefault("device_id", "0")
                    out[name] = given
                return out

            def get_provider_graph_assignment_info(self) -> list[Any]:
                return [
                    SimpleNamespace(ep_name=ep, get_nodes=lambda nodes=nodes: list(nodes))
                    for ep, nodes in self._placed.items()
                ]

            def disable_fallback(self) -> None:
                self._enable_fallback = False

            def run(self, names: Any, feed: Any, run_options: Any = None) -> Any:
                return self._real.run(names, feed, run_options)

            def io_binding(self) -> Any:
                return FakeBinding(self._real)

            def run_with_iobinding(self, binding: Any, run_options: Any = None) -> None:
                binding.outputs = self._real.run(binding.output_names, binding.inputs)

        return FakeInferenceSession


class FakeBinding:
    """IOBinding on a device that is not there: records the binds, runs on the CPU."""

    def __init__(self, session: Any) -> None:
        self.inputs: dict[str, np.ndarray] = {}
        self.output_names: list[str] = []
        self.devices: list[tuple[str, int]] = []
        self.outputs: list[np.ndarray] = []

    def bind_cpu_input(self, name: str, array: np.ndarray) -> None:
        self.inputs[name] = array

    def bind_output(self, name: str, device_type: str, device_id: int) -> None:
        self.output_names.append(name)
        self.devices.append((device_type, device_id))

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        return self.outputs


@pytest.fixture
def fake_ort(monkeypatch: pytest.MonkeyPatch) -> FakeOrt:
    """Replace onnxruntime's InferenceSession and provider list with a FakeOrt."""
    fake = FakeOrt()
    monkeypatch.setattr(ort, "InferenceSession", fake.session_class())
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(fake.available))
    return fake

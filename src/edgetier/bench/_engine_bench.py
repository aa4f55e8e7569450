"""`edgetier bench model`: the raw ONNX Runtime engine, no server in between.

For each execution provider x precision x batch size: warm up, then call ``session.run``
from ``concurrency`` threads for a fixed duration or count; record per-call latency,
throughput (samples/s), CPU and GPU use, peak memory and energy per inference.
"""

from __future__ import annotations

import functools
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgetier.bench._energy import EnergyProbe
from edgetier.bench._loadgen import InputSpec, synthetic_inputs
from edgetier.bench._meta import make_report, model_info
from edgetier.bench._progress import SweepProgress
from edgetier.bench._sampling import ResourceSampler
from edgetier.bench._schema import BenchReport, BenchResult, Precision
from edgetier.bench._stats import latency_summary, merge_repeats
from edgetier.errors import ConfigError, ModelLoadError
from edgetier.runtime import PROVIDER_NAMES, datatype_of

__all__ = ["PROVIDERS", "ModelBenchConfig", "measure_engine", "run_model_bench"]

PROVIDERS = PROVIDER_NAMES  # config spelling -> ONNX Runtime's, declared in edgetier.runtime


@dataclass
class ModelBenchConfig:
    """What `bench model` sweeps and how long each point runs."""

    path: Path
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    providers: list[str] | None = None  # short names; None = every available one
    precisions: list[Precision] = field(default_factory=lambda: ["fp32"])
    concurrency: int = 1
    duration_s: float | None = 5.0
    count: int | None = None
    warmup_s: float = 1.0
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    intra_op_spinning: bool = True
    """False sets ONNX Runtime's session.intra_op.allow_spinning to 0."""
    repeats: int = 1
    energy: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.count is not None and self.count < 1:
            raise ConfigError(f"count must be >= 1, got {self.count}")
        if self.count is None and (self.duration_s is None or self.duration_s <= 0):
            raise ConfigError(f"duration_s must be > 0, got {self.duration_s}")


def precision_hint(path: Path, native: Precision, wanted: Precision) -> str:
    """A command that gets ``wanted`` for the model at ``path`` (which is ``native``), as
    the user can run it: bench the file as it is, or make the version with `edgetier model`.
    """
    if wanted == "fp32" or native != "fp32":  # nothing turns a model back into FP32
        return (
            f"measure it as it is: `edgetier bench model {shlex.quote(str(path))} "
            f"--precisions {native}`"
        )
    in_repo = path.parent.name.isdigit()
    model_dir = shlex.quote(str(path.parent.parent)) if in_repo else "MODEL_DIR"
    make = (
        f"edgetier model convert --fp16 {model_dir}"
        if wanted == "fp16"
        else f"edgetier model quantize --int8 --calibration CALIBRATION_DIR {model_dir}"
    )
    where = (
        "" if in_repo else " (MODEL_DIR: a repository model folder with this file as 1/model.onnx)"
    )
    return f"make a {wanted} version with `{make}`{where}, then bench its model.onnx"


def native_precision(model: onnx.ModelProto) -> Precision:
    """fp16 / int8 when the graph itself carries them, else fp32."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def _plan(
    cfg: ModelBenchConfig, native: Precision
) -> tuple[list[tuple[str, Precision]], list[str]]:
    """(provider, precision) pairs to run, and notes on the pairs that cannot run here."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = cfg.providers or [k for k, v in PROVIDERS.items() if v in available]
    runs: list[tuple[str, Precision]] = []
    notes: list[str] = []
    for short in wanted:
        if short not in PROVIDERS:
            raise ConfigError(f"provider must be one of {sorted(PROVIDERS)}, got {short!r}")
        if PROVIDERS[short] not in available:
            notes.append(
                f"provider {short}: {PROVIDERS[short]} is not in this onnxruntime build "
                f"(available: {sorted(available)})"
            )
            continue
        for precision in cfg.precisions:
            if precision == native or (short == "tensorrt" and precision == "fp16"):
                runs.append((short, precision))
            else:
                notes.append(
                    f"{short}/{precision}: skipped; the model is {native} and {short} cannot "
                    f"run it as {precision}; {precision_hint(cfg.path, native, precision)}"
                )
    return runs, notes


def _session(cfg: ModelBenchConfig, provider: str, precision: Precision) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.intra_op_threads
    opts.inter_op_num_threads = cfg.inter_op_threads
    if not cfg.intra_op_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chain: list[Any] = []
    if provider == "tensorrt":
        chain.append(("TensorrtExecutionProvider", {"trt_fp16_enable": precision == "fp16"}))
    if provider in ("tensorrt", "cuda"):
        chain.append("CUDAExecutionProvider")
    chain.append("CPUExecutionProvider")
    try:
        return ort.InferenceSession(str(cfg.path), opts, providers=chain)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {cfg.path} on {provider}: {exc}") from exc


def _specs(session: Any) -> list[InputSpec]:
    from edgetier.bench.peers._common import ORT_TO_NUMPY

    return [
        InputSpec(
            t.name,
            datatype_of(np.dtype(ORT_TO_NUMPY[t.type])),
            tuple(d if isinstance(d, int) else -1 for d in t.shape),
        )
        for t in session.get_inputs()
    ]


def _run_threads(
    fn: Callable[[], object], concurrency: int, *, duration_s: float | None, count: int | None
) -> tuple[list[int], float]:
    """Call ``fn`` from ``concurrency`` threads until the duration or count; latencies + wall."""
    latencies: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    t_end = None if duration_s is None else time.perf_counter_ns() + int(duration_s * 1e9)

    def worker() -> None:
        try:
            while not stop.is_set():
                t0 = time.perf_counter_ns()
                fn()
                t1 = time.perf_counter_ns()
                with lock:
                    latencies.append(t1 - t0)
                    if (count is not None and len(latencies) >= count) or (
                        t_end is not None and t1 >= t_end
                    ):
                        stop.set()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    start = time.perf_counter_ns()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall_s = (time.perf_counter_ns() - start) / 1e9
    if errors:
        raise errors[0]
    return latencies, wall_s


def measure_engine(
    run_once: Callable[[], object],
    *,
    batch_size: int,
    concurrency: int = 1,
    duration_s: float | None = 5.0,
    count: int | None = None,
    warmup_s: float = 1.0,
    energy: EnergyProbe | None = None,
) -> tuple[list[int], float, dict[str, Any]]:
    """Warm up, then measure ``run_once`` (one inference of ``batch_size`` rows) from
    ``concurrency`` threads: (latencies ns, window s, resource figures)."""
    _run_threads(run_once, concurrency, duration_s=max(warmup_s, 1e-3), count=None)
    sampler = ResourceSampler()
    sampler.start()
    if energy is not None:
        energy.start()
    latencies, wall_s = _run_threads(run_once, concurrency, duration_s=duration_s, count=count)
    reading = energy.stop() if energy is not None else None
    usage = sampler.stop()
    sampler.close()
    n = len(latencies) * batch_size
    extra = {
        "cpu_percent": usage.cpu_percent,
        "gpu_util_percent": usage.gpu_util_percent,
        "peak_memory_bytes": usage.peak_memory_bytes,
        "energy_j_per_inference": reading.per_inference(n) if reading else None,
        "energy_source": reading.source if reading else None,
        "energy_estimated": reading.estimated if reading else False,
    }
    return latencies, wall_s, extra


def run_model_bench(cfg: ModelBenchConfig, *, command: str | None = None) -> BenchReport:
    """Sweep providers x precisions x batch sizes on the raw engine; one report."""
    if not cfg.path.is_file():
        raise ConfigError(f"model path must be an ONNX file, got {cfg.path} (not found)")
    try:
        proto = onnx.load(str(cfg.path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{cfg.path}: not a readable ONNX model ({exc})") from exc
    native = native_precision(proto)
    plan, notes = _plan(cfg, native)
    if not plan:
        raise ConfigError("nothing to run: " + "; ".join(notes))
    probe = EnergyProbe(enabled=cfg.energy)
    if probe.unavailable:
        notes.append(f"energy: {probe.unavailable}")
    elif probe.estimated:
        notes.append(f"energy: estimated ({probe.source}), not measured")
    results: list[BenchResult] = []
    total = len(plan) * len(cfg.batch_sizes) * cfg.repeats
    try:
        with SweepProgress(total, title="bench model", enabled=cfg.progress) as progress:
            for provider, precision in plan:
                session = _session(cfg, provider, precision)
                running = session.get_providers()[0]
                specs = _specs(session)
                batched = bool(specs) and all(s.shape[:1] == (-1,) for s in specs)
                for batch_size in cfg.batch_sizes:
                    if not batched and batch_size != 1:
                        notes.append(f"batch {batch_size}: the model has no batch dimension")
                        continue
                    inputs = synthetic_inputs(specs, batch_size, batched=batched)
                    repeats = []
                    for r in range(cfg.repeats):
                        progress.phase(f"{provider}/{precision} batch {batch_size} #{r + 1}")
                        lat, wall_s, extra = measure_engine(
                            functools.partial(session.run, None, inputs),
                            batch_size=batch_size,
                            concurrency=cfg.concurrency,
                            duration_s=cfg.duration_s,
                            count=cfg.count,
                            warmup_s=cfg.warmup_s,
                            energy=probe,
                        )
                        repeats.append(
                            BenchResult(
                                system="onnxruntime",
                                provider=running,
                                precision=precision,
                                batch_size=batch_size,
                                concurrency=cfg.concurrency,
                                throughput_per_s=len(lat) * batch_size / wall_s,
                                latency_ms=latency_summary(lat),
                                requests=len(lat),
                                **extra,
                            )
                        )
                        progress.advance()
                    merged = merge_repeats(
                        repeats, label=f"onnxruntime {provider}/{precision} batch {batch_size}"
                    )
                    results.append(merged)
    finally:
        probe.close()
    return make_report("model", results, model=model_info(cfg.path), command=command, notes=notes)

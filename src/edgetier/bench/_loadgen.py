"""The asyncio load generator: KServe v2 requests over tritonclient's asyncio clients.

Closed loop: ``concurrency`` workers each send the next request as soon as the last one
returns. Open loop: requests leave at Poisson arrival times whatever the server does, and
latency is measured from each request's *scheduled* time, so queueing (in the server or in
this client) is never hidden. Tensors go as JSON (HTTP only), binary, or through system
shared memory regions registered with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import psutil

from edgetier.bench._arrivals import poisson_arrivals
from edgetier.errors import ConfigError, EdgeTierError
from edgetier.runtime import to_numpy_dtype

__all__ = [
    "InputSpec",
    "LoadResult",
    "RequestSender",
    "closed_loop",
    "open_loop",
    "parse_url",
    "served_provider",
    "synthetic_inputs",
]

ProtocolName = Literal["grpc", "http"]
Tensors = Literal["json", "binary", "shm"]


def parse_url(url: str) -> tuple[ProtocolName, str]:
    """``grpc://host:port`` or ``http://host:port`` -> (protocol, "host:port")."""
    parsed = urlparse(url)
    if parsed.scheme not in ("grpc", "http") or not parsed.hostname or not parsed.port:
        raise ConfigError(f"server URL must be grpc://host:port or http://host:port, got {url!r}")
    return parsed.scheme, f"{parsed.hostname}:{parsed.port}"  # type: ignore[return-value]


@dataclass(frozen=True)
class InputSpec:
    """One tensor of the model: name, KServe datatype, full shape (-1 = dynamic)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def synthetic_inputs(
    specs: Sequence[InputSpec], batch_size: int, *, batched: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random tensors for the specs: the batch dim set to ``batch_size``, other -1 dims to 1."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        dims = list(spec.shape)
        if batched and dims:
            dims[0] = batch_size
        dims = [1 if d < 0 else d for d in dims]
        if spec.datatype == "BYTES":
            arrays[spec.name] = np.full(dims, b"edgetier", dtype=np.object_)
            continue
        dtype = to_numpy_dtype(spec.datatype)
        if np.issubdtype(dtype, np.floating):
            arrays[spec.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype == np.bool_:
            arrays[spec.name] = rng.integers(0, 2, dims).astype(np.bool_)
        else:
            arrays[spec.name] = rng.integers(0, 100, dims).astype(dtype)
    return arrays


def served_provider(metadata: dict[str, Any], config: dict[str, Any] | None) -> str | None:
    """The execution provider a KServe v2 server names for a model, or None.

    EdgeTier puts it in the model metadata's ``parameters`` (HTTP; gRPC's metadata message
    has no parameters) and in the model config's ``parameters`` as a Triton string value.
    """
    found = (metadata.get("parameters") or {}).get("execution_provider")
    if found is None and config:
        found = (config.get("parameters") or {}).get("execution_provider")
        if isinstance(found, dict):
            found = found.get("string_value")
    return str(found) if found else None


_region_ids = itertools.count()


class RequestSender:
    """One model on one server: metadata discovery, request building, shm regions, send."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        batch_size: int = 1,
        tensors: Tensors = "binary",
        version: str = "",
        slots: int = 1,
        timeout_s: float = 60.0,
    ) -> None:
        self.protocol, self.address = parse_url(url)
        if tensors == "json" and self.protocol == "grpc":
            raise ConfigError("tensors='json' is HTTP only; gRPC carries binary or shm tensors")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.version, self.batch_size = model, version, batch_size
        self.tensors: Tensors = tensors
        self.slots = max(1, slots)
        self.timeout_s = timeout_s
        self._client: Any = None
        self._mod: Any = None
        self._inputs: list[Any] = []
        self._outputs: list[list[Any]] | None = None  # per slot
        self._regions: list[tuple[str, Any]] = []
        self.input_specs: list[InputSpec] = []
        self.output_specs: list[InputSpec] = []
        self.provider: str | None = None
        """The execution provider the server names in the model's metadata or config."""

    async def open(self) -> None:
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as mod
        else:
            import tritonclient.http.aio as mod  # type: ignore[no-redef]
        self._mod = mod
        self._client = mod.InferenceServerClient(url=self.address)
        try:
            await self._discover()
            arrays = synthetic_inputs(self.input_specs, self.batch_size, batched=self._batched)
            await self._build(arrays)
        except BaseException:
            await self.close()
            raise

    async def _discover(self) -> None:
        try:
            if self.protocol == "grpc":
                meta = await self._client.get_model_metadata(self.model, self.version, as_json=True)
                config = await self._client.get_model_config(self.model, self.version, as_json=True)
                config = config.get("config", config)
            else:
                meta = await self._client.get_model_metadata(self.model, self.version)
                try:
                    config = await self._client.get_model_config(self.model, self.version)
                except Exception:
                    config = {}
        except Exception as exc:
            raise EdgeTierError(
                f"cannot read metadata of model {self.model!r} at {self.address} "
                f"({self.protocol}): {exc}"
            ) from exc

        def specs(items: list[dict[str, Any]]) -> list[InputSpec]:
            return [
                InputSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
                for t in items
            ]

        self.input_specs = specs(meta["inputs"])
        self.output_specs = specs(meta["outputs"])
        self.provider = served_provider(meta, config)
        max_batch = int(config.get("max_batch_size", 0) or 0) if config else None
        # Without a config endpoint, a leading -1 dim is taken as the batch dim.
        self._batched = (
            max_batch > 0
            if max_batch is not None
            else all(s.shape[:1] == (-1,) for s in self.input_specs)
        )
        if not self._batched and self.batch_size != 1:
            raise ConfigError(
                f"model {self.model!r} has no batch dimension: batch_size must be 1, "
                f"got {self.batch_size}"
            )

    async def _build(self, arrays: dict[str, np.ndarray]) -> None:
        mod = self._mod
        inputs = []
        for spec in self.input_specs:
            arr = arrays[spec.name]
            inp = mod.InferInput(spec.name, list(arr.shape), spec.datatype)
            if self.tensors != "shm":
                if self.protocol == "http":
                    inp.set_data_from_numpy(arr, binary_data=self.tensors == "binary")
                else:
                    inp.set_data_from_numpy(arr)
            inputs.append(inp)
        self._inputs = inputs
        if self.tensors == "shm":
            await self._setup_shm(arrays)
        elif self.tensors == "json":
            self._outputs = [
                [mod.InferRequestedOutput(s.name, binary_data=False) for s in self.output_specs]
            ]

    def _output_nbytes(self, spec: InputSpec) -> int:
        dims = list(spec.shape)
        if self._batched and dims:
            dims[0] = self.batch_size
        if any(d < 0 for d in dims) or spec.datatype == "BYTES":
            raise ConfigError(
                f"shm tensors need a fixed output size: output {spec.name!r} has shape "
                f"{list(spec.shape)} and datatype {spec.datatype}"
            )
        return int(np.prod(dims)) * to_numpy_dtype(spec.datatype).itemsize

    async def _region(self, nbytes: int) -> tuple[str, Any]:
        import tritonclient.utils.shared_memory as shm

        n = next(_region_ids)
        name = f"edgetier_bench_{os.getpid()}_{n}"
        handle = shm.create_shared_memory_region(name, f"/{name}", nbytes)
        self._regions.append((name, handle))
        try:
            await self._client.register_system_shared_memory(name, f"/{name}", nbytes)
        except Exception as exc:
            raise EdgeTierError(
                f"cannot register system shared-memory region {name!r} ({nbytes} bytes) with "
                f"{self.address}: {exc}"
            ) from exc
        return name, handle

    async def _setup_shm(self, arrays: dict[str, np.ndarray]) -> None:
        import tritonclient.utils.shared_memory as shm

        for inp, spec in zip(self._inputs, self.input_specs, strict=True):
            arr = np.ascontiguousarray(arrays[spec.name])
            if arr.dtype == np.object_:
                raise ConfigError(f"shm tensors do not carry BYTES input {spec.name!r}")
            name, handle = await self._region(arr.nbytes)
            shm.set_shared_memory_region(handle, [arr])
            inp.set_shared_memory(name, arr.nbytes)
        sizes = [self._output_nbytes(s) for s in self.output_specs]
        self._outputs = []
        for _ in range(self.slots):
            outs = []
            for spec, nbytes in zip(self.output_specs, sizes, strict=True):
                name, _handle = await self._region(nbytes)
                out = self._mod.InferRequestedOutput(spec.name)
                out.set_shared_memory(name, nbytes)
                outs.append(out)
            self._outputs.append(outs)

    async def send(self, slot: int = 0) -> None:
        """One inference; raises on any error the server returns."""
        outputs = None if self._outputs is None else self._outputs[slot % len(self._outputs)]
        if self.protocol == "grpc":
            await self._client.infer(
                self.model,
                self._inputs,
                model_version=self.version,
                outputs=outputs,
                client_timeout=self.timeout_s,
            )
        else:
            await self._client.infer(
                self.model,
                self._inputs,
                model_version=self.version,
                outputs=outputs,
                timeout=int(self.timeout_s * 1e6),
            )

    async def close(self) -> None:
        import tritonclient.utils.shared_memory as shm

        if self._client is not None:
            for name, _ in self._regions:
                with contextlib.suppress(Exception):
                    await self._client.unregister_system_shared_memory(name)
            await self._client.close()
            self._client = None
        for _, handle in self._regions:
            with contextlib.suppress(Exception):
                shm.destroy_shared_memory_region(handle)
        self._regions = []


@dataclass
class LoadResult:
    """What one load phase measured (the measurement window only, warm-up excluded)."""

    latencies_ns: np.ndarray
    window_s: float
    requests: int
    errors: int
    client_cpu_percent: float
    batch_size: int
    first_error: str | None = None
    late_sends: int = 0  # open loop: requests sent > 1 ms after their scheduled time
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def throughput_per_s(self) -> float:
        return self.requests * self.batch_size / self.window_s if self.window_s > 0 else 0.0


def _cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


async def closed_loop(
    sender: RequestSender,
    concurrency: int,
    *,
    duration_s: float | None = 5.0,
    count: int | None = None,
    warmup_s: float = 1.0,
) -> LoadResult:
    """``concurrency`` workers back to back; measures ``duration_s`` or ``count`` requests."""
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    if (duration_s is None) == (count is None):
        raise ConfigError("give exactly one of duration_s or count")
    latencies: list[int] = []
    errors = 0
    first_error: str | None = None
    t_begin = time.perf_counter_ns()
    t_window = t_begin + int(warmup_s * 1e9)
    t_end = t_window + int(duration_s * 1e9) if duration_s is not None else None
    done = asyncio.Event()
    marks: dict[str, float] = {}

    async def cpu_mark() -> None:
        await asyncio.sleep(max(0.0, (t_window - time.perf_counter_ns()) / 1e9))
        marks["cpu0"], marks["t0"] = _cpu_s(), time.perf_counter_ns()

    # A slow model may finish nothing inside a short window: keep going past t_end until
    # every worker has completed about once, so the figures rest on real completions.
    min_done = concurrency

    async def worker(slot: int) -> None:
        nonlocal errors, first_error
        while not done.is_set():
            t0 = time.perf_counter_ns()
            failed = None
            try:
                await sender.send(slot)
            except Exception as exc:
                failed = exc
            t1 = time.perf_counter_ns()
            if t1 < t_window or done.is_set():
                continue
            if failed is not None:
                errors += 1
                first_error = first_error or f"{type(failed).__name__}: {failed}"
                await asyncio.sleep(0.001)
            else:
                latencies.append(t1 - t0)
            finished = len(latencies) + errors
            if (count is not None and finished >= count) or (
                t_end is not None and t1 >= t_end and finished >= min_done
            ):
                marks["t1"] = t1
                done.set()

    mark = asyncio.create_task(cpu_mark())
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    await mark
    window_s = (marks["t1"] - marks["t0"]) / 1e9
    cpu = (_cpu_s() - marks["cpu0"]) / max(window_s, 1e-9) * 100.0
    return LoadResult(
        np.asarray(latencies, dtype=np.int64),
        window_s,
        len(latencies),
        errors,
        cpu,
        sender.batch_size,
        first_error,
    )


async def open_loop(
    sender: RequestSender,
    rate_per_s: float,
    *,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    seed: int = 0,
    max_outstanding: int = 1024,
) -> LoadResult:
    """Poisson arrivals at ``rate_per_s``; latency counted from each scheduled send time."""
    schedule = poisson_arrivals(rate_per_s, warmup_s + duration_s, seed=seed)
    slots = asyncio.Queue[int]()
    for i in range(
        min(max_outstanding, sender.slots if sender.tensors == "shm" else max_outstanding)
    ):
        slots.put_nowait(i)
    latencies: list[int] = []
    errors = late = 0
    first_error: str | None = None
    tasks: set[asyncio.Task[None]] = set()
    t_base = time.perf_counter_ns() + 1_000_000
    t_window = t_base + int(warmup_s * 1e9)
    last_done = [t_window]

    async def one(scheduled_ns: int, slot: int) -> None:
        nonlocal errors, first_error
        try:
            await sender.send(slot)
        except Exception as exc:
            if scheduled_ns >= t_window:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
        else:
            if scheduled_ns >= t_window:
                last_done[0] = time.perf_counter_ns()
                latencies.append(last_done[0] - scheduled_ns)
        finally:
            slots.put_nowait(slot)

    cpu0 = None
    for offset_s in schedule:
        scheduled = t_base + int(offset_s * 1e9)
        if cpu0 is None and scheduled >= t_window:
            cpu0 = _cpu_s()
        delay = (scheduled - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        slot = await slots.get()  # waits only when max_outstanding requests are in flight
        if time.perf_counter_ns() - scheduled > 1_000_000 and scheduled >= t_window:
            late += 1
        task = asyncio.create_task(one(scheduled, slot))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=sender.timeout_s)
    # Achieved rate over the scheduled window, stretched only if the last answer came later.
    window_s = max(duration_s, (last_done[0] - t_window) / 1e9)
    cpu = (_cpu_s() - (cpu0 if cpu0 is not None else _cpu_s())) / max(window_s, 1e-9) * 100.0
    result = LoadResult(
        np.asarray(latencies, dtype=np.int64),
        window_s,
        len(latencies),
        errors,
        cpu,
        sender.batch_size,
        first_error,
        late,
    )
    result.extra["scheduled"] = float(int(np.sum(schedule >= warmup_s)))
    return result

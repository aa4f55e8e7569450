"""The fixed cost per request on each transport, for models that cost almost nothing.

Two models: the small demo model (an MLP, [N, 16] -> [N, 4]: 64 bytes in) and an Identity
graph on one 224x224 RGB frame (588 KiB in and out), which measures what moving a large
tensor costs. In one run, in rounds, every path taking its turn in each round so that the
drift of a shared machine hits all alike:

1. Latency at batch 1, one request at a time (tritonclient's synchronous clients, the
   cheapest Python clients): raw ONNX Runtime (the server's own engine, loaded with
   ``load_engine``), in-process batching (``DynamicBatcher.submit``, the same with
   ``inline_execute_us=200`` as the server sets it, and a ``@batch`` function on the same
   engine), and the EdgeTier server over HTTP with JSON tensors, HTTP
   with binary tensors, gRPC unary, gRPC streaming, and system shared memory over gRPC and
   HTTP (the client writes the input into its region and reads the output from its region
   on every request); for the small model also the same gRPC clients against a service
   that answers at once (``_null_grpc.py``), the floor of a gRPC round trip whatever the
   server. The fixed cost of a path is its p50 minus raw ONNX Runtime's p50 in the same
   round; the figure is the median over rounds.
2. Small model only, throughput at concurrency 8, batch 1 and batch 8: raw ONNX Runtime
   (8 threads), the in-process batcher (8 asyncio callers) and the server over gRPC (the
   asyncio load generator of `edgetier bench`), each with dynamic batching and no queue
   delay.

Client and server share the machine's cores.

    python benchmarks/fixed_cost.py                       # about 2 minutes
    python benchmarks/fixed_cost.py --requests 3000 --repeats 7

Writes benchmarks/results/fixed_cost.json and fixed_cost_frame.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
import yaml
from _harness import RESULTS, null_grpc_service, save, timed, timed_async, wait_ready
from onnx import TensorProto, helper

from edgetier.batching import DynamicBatcher, batch
from edgetier.bench import (
    BenchResult,
    RequestSender,
    closed_loop,
    latency_summary,
    make_report,
    model_info,
)
from edgetier.runtime import ModelRepository, load_engine
from edgetier.synthetic import build_demo_repository
from edgetier.testing import ServerProcess, free_port

Timed = Callable[[int], list[int]]  # n requests -> their latencies in ns


@dataclass(frozen=True)
class _Model:
    """One FP32 input, one FP32 output, batch 1."""

    name: str
    input: str
    output: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def describe(self) -> str:
        kib = 4 * math.prod(self.in_shape) / 1024
        return f"{self.name}: {list(self.in_shape)} -> {list(self.out_shape)} FP32 ({kib:g} KiB in)"


SMALL = _Model("small", "input", "output", (1, 16), (1, 4))
FRAME = _Model("frame", "x", "y", (1, 3, 224, 224), (1, 3, 224, 224))


def _write_frame_model(repo: Path) -> None:
    """An Identity graph on one 224x224 RGB frame: what moving the tensor costs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 224, 224])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "frame", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (repo / "frame" / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "frame" / "1" / "model.onnx"))
    config = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 0}}
    (repo / "frame" / "config.yaml").write_text(yaml.safe_dump(config))


class _Shm:
    """An input and an output region registered with the server over one client."""

    def __init__(self, client: Any, mod: Any, model: _Model, x: np.ndarray, tag: str) -> None:
        self.client, self.model, self.x = client, model, x
        self.names = [f"fixed_cost_{os.getpid()}_{model.name}_{tag}_{io}" for io in ("in", "out")]
        sizes = [x.nbytes, 4 * math.prod(model.out_shape)]
        self.handles = []
        for name, size in zip(self.names, sizes, strict=True):
            self.handles.append(shm.create_shared_memory_region(name, f"/{name}", size))
            client.register_system_shared_memory(name, f"/{name}", size)
        self.inp = mod.InferInput(model.input, list(model.in_shape), "FP32")
        self.inp.set_shared_memory(self.names[0], sizes[0])
        self.out = mod.InferRequestedOutput(model.output)
        self.out.set_shared_memory(self.names[1], sizes[1])

    def call(self) -> None:
        shm.set_shared_memory_region(self.handles[0], [self.x])
        self.client.infer(self.model.name, [self.inp], outputs=[self.out])
        shm.get_contents_as_numpy(self.handles[1], np.float32, list(self.model.out_shape))

    def close(self) -> None:
        for name, handle in zip(self.names, self.handles, strict=True):
            self.client.unregister_system_shared_memory(name)
            shm.destroy_shared_memory_region(handle)


class _Grpc:
    """tritonclient's synchronous gRPC client on one server: unary and streaming calls."""

    def __init__(self, port: int, model: _Model, x: np.ndarray) -> None:
        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.model = model
        self.inp = grpcclient.InferInput(model.input, list(model.in_shape), "FP32")
        self.inp.set_data_from_numpy(x)
        self.answers: queue.Queue[Any] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.answers.put(error))

    def unary(self) -> None:
        self.client.infer(self.model.name, [self.inp])

    def stream(self) -> None:
        self.client.async_stream_infer(self.model.name, [self.inp])
        error = self.answers.get()
        if error is not None:
            raise error

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


class _Paths:
    """Every path to the model, each as a timed call of n sequential batch-1 requests."""

    def __init__(
        self, model: _Model, engine: Any, http_port: int, grpc_port: int, null_port: int | None
    ) -> None:
        self.model = model
        self.x = np.random.default_rng(0).random(model.in_shape, dtype=np.float32)
        x, shape = self.x, list(model.in_shape)
        self.loop = asyncio.new_event_loop()
        self.engine = engine
        self.batcher = DynamicBatcher(engine.run, max_batch_size=8, name="in-process")
        # as the server does for a cheap single-instance model: no thread hand-off when idle
        self.inline = DynamicBatcher(
            engine.run, max_batch_size=8, inline_execute_us=200, name="in-process inline"
        )
        for batcher in (self.batcher, self.inline):
            self.loop.run_until_complete(batcher.start())

        @batch(max_batch_size=8)
        def decorated(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return engine.run(inputs)

        self.decorated = decorated
        self.grpc = _Grpc(grpc_port, model, x)
        self.null = _Grpc(null_port, model, x) if null_port is not None else None
        self.http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        self.http_bin = httpclient.InferInput(model.input, shape, "FP32")
        self.http_bin.set_data_from_numpy(x, binary_data=True)
        self.http_json = httpclient.InferInput(model.input, shape, "FP32")
        self.http_json.set_data_from_numpy(x, binary_data=False)
        self.json_out = [httpclient.InferRequestedOutput(model.output, binary_data=False)]
        self.shm_grpc = _Shm(self.grpc.client, grpcclient, model, x, "grpc")
        self.shm_http = _Shm(self.http, httpclient, model, x, "http")

    def _async(self, make: Callable[[], Any]) -> Timed:
        return lambda n: self.loop.run_until_complete(timed_async(make, n))

    def latency_points(self) -> dict[tuple[str, str | None, str | None], Timed]:
        """(system, protocol, tensors) -> timed call."""
        feed, name = {self.model.input: self.x}, self.model.name
        points: dict[tuple[str, str | None, str | None], Timed] = {
            ("onnxruntime", None, None): lambda n: timed(lambda: self.engine.run(feed), n),
            ("in-process DynamicBatcher", None, None): self._async(
                lambda: self.batcher.submit(feed)
            ),
            ("in-process DynamicBatcher inline", None, None): self._async(
                lambda: self.inline.submit(feed)
            ),
            ("in-process @batch", None, None): self._async(lambda: self.decorated(feed)),
            ("edgetier", "http", "json"): lambda n: timed(
                lambda: self.http.infer(name, [self.http_json], outputs=self.json_out), n
            ),
            ("edgetier", "http", "binary"): lambda n: timed(
                lambda: self.http.infer(name, [self.http_bin]), n
            ),
            ("edgetier", "grpc", "binary"): lambda n: timed(self.grpc.unary, n),
            ("edgetier gRPC stream", "grpc", "binary"): lambda n: timed(self.grpc.stream, n),
            ("edgetier", "grpc", "shm"): lambda n: timed(self.shm_grpc.call, n),
            ("edgetier", "http", "shm"): lambda n: timed(self.shm_http.call, n),
        }
        if self.null is not None:  # the floor: a gRPC service that answers at once
            null = self.null
            points[("null gRPC service", "grpc", "binary")] = lambda n: timed(null.unary, n)
            points[("null gRPC service stream", "grpc", "binary")] = lambda n: timed(null.stream, n)
        return points

    def close(self) -> None:
        self.shm_grpc.close()
        self.shm_http.close()
        self.grpc.close()
        if self.null is not None:
            self.null.close()
        self.http.close()
        self.loop.run_until_complete(self.decorated.stop())
        for batcher in (self.batcher, self.inline):
            self.loop.run_until_complete(batcher.stop())
        self.loop.close()


def _raw_throughput(engine: Any, batch_size: int, concurrency: int, duration_s: float) -> float:
    feed = {SMALL.input: np.ones((batch_size, 16), np.float32)}
    done = [0] * concurrency
    stop = time.perf_counter() + duration_s

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            engine.run(feed)
            done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) * batch_size / (time.perf_counter() - start)


async def _batcher_throughput(
    batcher: DynamicBatcher, batch_size: int, concurrency: int, duration_s: float
) -> float:
    feed = {SMALL.input: np.ones((batch_size, 16), np.float32)}
    done = 0
    stop = time.perf_counter() + duration_s

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await batcher.submit(feed)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done * batch_size / (time.perf_counter() - start)


async def _server_throughput(
    grpc_port: int, batch_size: int, concurrency: int, duration_s: float
) -> float:
    sender = RequestSender(f"grpc://127.0.0.1:{grpc_port}", SMALL.name, batch_size=batch_size)
    await sender.open()
    try:
        load = await closed_loop(sender, concurrency, duration_s=duration_s, warmup_s=0.2)
    finally:
        await sender.close()
    return load.throughput_per_s


def _throughputs(
    paths: _Paths, grpc_port: int, repeats: int, duration_s: float
) -> dict[tuple[str, int], list[float]]:
    """(system, batch size) -> throughput at concurrency 8 in each round."""
    runs: dict[str, Callable[[int], float]] = {
        "onnxruntime": lambda b: _raw_throughput(paths.engine, b, 8, duration_s),
        "in-process DynamicBatcher": lambda b: paths.loop.run_until_complete(
            _batcher_throughput(paths.batcher, b, 8, duration_s)
        ),
        "edgetier": lambda b: asyncio.run(_server_throughput(grpc_port, b, 8, duration_s)),
    }
    out: dict[tuple[str, int], list[float]] = {}
    for r in range(repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for batch_size in (1, 8):
            for system in order:
                out.setdefault((system, batch_size), []).append(runs[system](batch_size))
    return out


def _measure_rounds(points: dict[Any, Timed], requests: int, repeats: int) -> dict[Any, Any]:
    """Each point's latencies per round; rounds in alternating order."""
    for measure in points.values():  # warm-up
        measure(max(20, requests // 5))
    samples: dict[Any, list[list[int]]] = {key: [] for key in points}
    for r in range(repeats):
        for key in list(points) if r % 2 == 0 else list(reversed(points)):
            samples[key].append(points[key](requests))
    return samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=1500, help="small model: per path and round")
    p.add_argument("--frame-requests", type=int, default=100, help="frame model: per path, round")
    p.add_argument("--repeats", type=int, default=5, help="rounds")
    p.add_argument("--duration-s", type=float, default=1.0, help="per throughput point")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args()

    repo = Path(tempfile.mkdtemp()) / "models"
    build_demo_repository(repo, models=[SMALL.name])
    config_file = repo / SMALL.name / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["dynamic_batching"] = {"max_queue_delay_microseconds": 0}
    config_file.write_text(yaml.safe_dump(config))
    _write_frame_model(repo)
    models = ModelRepository(repo)
    engines = {
        m: load_engine(models.model_path(m.name, 1), models.config(m.name)) for m in (SMALL, FRAME)
    }
    server = ServerProcess(repo, Path("var/bench/fixed_cost-server"), "--log-level", "warning")
    http_port, grpc_port, null_port = server.http_port, server.grpc_port, free_port()
    server.start()
    null = null_grpc_service(null_port)
    paths: list[_Paths] = []
    try:
        for port, what in ((grpc_port, "edgetier serve"), (null_port, "null service")):
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            wait_ready(client, [SMALL.name, FRAME.name], what)
        paths = [
            _Paths(SMALL, engines[SMALL], http_port, grpc_port, null_port),
            _Paths(FRAME, engines[FRAME], http_port, grpc_port, None),
        ]
        small = _measure_rounds(paths[0].latency_points(), args.requests, args.repeats)
        frame = _measure_rounds(paths[1].latency_points(), args.frame_requests, args.repeats)
        throughput = _throughputs(paths[0], grpc_port, args.repeats, args.duration_s)
    finally:
        for path in paths:
            path.close()
        server.stop()
        null.terminate()
        null.wait(30)

    common = [
        f"{args.repeats} rounds in alternating order; each row is the round with the median "
        "p50; +p50 vs raw is the median over rounds of the path's p50 minus raw ONNX "
        "Runtime's p50 in the same round (its fixed cost per request)",
        "clients: tritonclient's synchronous HTTP and gRPC clients (gRPC streaming: "
        "start_stream + async_stream_infer, one request in flight); shm: the client "
        "writes the input into its region and reads the output from its region each time",
        "server: edgetier serve in its own process, dynamic batching with no queue delay; "
        "in-process: DynamicBatcher(engine.run, max_batch_size=8), the same with "
        "inline_execute_us=200 (a batch that finds the instance idle runs on the event loop "
        "once batches average under 200 us, as in the server) and @batch(max_batch_size=8), "
        "on the server's engine, on one asyncio loop",
        "client and server share the machine's cores, and the machine ran other jobs",
    ]
    for model, samples, requests, stem in (
        (SMALL, small, args.requests, "fixed_cost"),
        (FRAME, frame, args.frame_requests, "fixed_cost_frame"),
    ):
        rows, notes = _rows(samples, engines[model].provider, args.repeats)
        notes += [f"{model.describe()}; {requests} sequential batch-1 requests per path and round"]
        notes += common
        if model is SMALL:
            notes += _throughput_notes(throughput, args.duration_s)
        path = models.model_path(model.name, 1)
        report = make_report("server", rows, model=model_info(path, model.name), notes=notes)
        save(report, args.out_dir, stem)


def _rows(
    samples: dict[Any, list[list[int]]], provider: str, repeats: int
) -> tuple[list[BenchResult], list[str]]:
    p50: dict[Any, list[float]] = {
        key: [float(np.median(r)) / 1e6 for r in runs] for key, runs in samples.items()
    }

    def paired_us(key: Any, base: Any) -> float:
        """Median over rounds of key's p50 minus base's p50 in the same round, in us."""
        return 1e3 * statistics.median(a - b for a, b in zip(p50[key], p50[base], strict=True))

    raw = ("onnxruntime", None, None)
    rows, notes = [], []
    for (system, protocol, tensors), runs in samples.items():
        p50s = p50[(system, protocol, tensors)]
        median_run = runs[int(np.argsort(p50s)[len(p50s) // 2])]
        rows.append(
            BenchResult(
                system=system,
                protocol=protocol,
                tensors=tensors,
                provider=provider,
                batch_size=1,
                concurrency=1,
                throughput_per_s=1e9 / float(np.mean(median_run)),
                latency_ms=latency_summary(median_run),
                repeats=repeats,
                spread_pct=100 * (max(p50s) - min(p50s)) / statistics.median(p50s),
                round_p50_ms=p50s,
                round_throughput_per_s=[1e9 / float(np.mean(r)) for r in runs],
                requests=len(median_run),
            )
        )
        if system != "onnxruntime":
            added_us = paired_us((system, protocol, tensors), raw)
            label = " ".join(x for x in (system, protocol, tensors) if x)
            what = "transport and client floor" if system.startswith("null") else "fixed cost"
            notes.append(f"{what} per request, {label}: {added_us:,.0f} us over raw")
    for kind, server, floor in (
        ("unary", ("edgetier", "grpc", "binary"), ("null gRPC service", "grpc", "binary")),
        (
            "streaming",
            ("edgetier gRPC stream", "grpc", "binary"),
            ("null gRPC service stream", "grpc", "binary"),
        ),
    ):
        if floor in p50:
            notes.append(
                f"gRPC {kind}: the server's own share (EdgeTier minus the null service "
                f"that answers at once, same client) {paired_us(server, floor):,.0f} us"
            )
    return rows, notes


def _throughput_notes(
    throughput: dict[tuple[str, int], list[float]], duration_s: float
) -> list[str]:
    raw = {b: statistics.median(throughput[("onnxruntime", b)]) for b in (1, 8)}
    notes = []
    for (system, batch_size), values in throughput.items():
        rate = statistics.median(values)
        notes.append(
            f"throughput at concurrency 8, batch {batch_size}, {system}: {rate:,.0f} "
            f"inferences/s = {rate / raw[batch_size]:.2f} x raw"
        )
    notes.append(
        f"throughput: concurrency 8 for {duration_s:g} s per point and round, median over "
        "rounds (raw: 8 threads; in-process: 8 asyncio callers on the DynamicBatcher; "
        "edgetier: the asyncio load generator of `edgetier bench` over gRPC, binary tensors)"
    )
    return notes


if __name__ == "__main__":
    main()

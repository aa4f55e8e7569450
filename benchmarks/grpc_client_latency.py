"""Added gRPC latency at batch 1 on the small model, by client, with the transport floor.

`added_latency.py` drives the server with the asyncio load generator, whose Python client
costs a share of every round trip. This script measures the server with four of
tritonclient's gRPC clients (sync and asyncio; unary and streaming), interleaved with the
raw engine, and measures each client against a gRPC service that does nothing
(`_null_grpc.py`): that floor is what the transport and the client cost on this machine
whatever the server, and edgetier minus the floor is the server's own share.
Writes benchmarks/results/grpc_client_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import tempfile
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from _harness import RESULTS, null_grpc_service, save, timed, timed_async, wait_ready

from edgetier.bench import BenchResult, latency_summary, make_report
from edgetier.runtime import ModelRepository, load_engine
from edgetier.synthetic import build_demo_repository
from edgetier.testing import ServerProcess, free_port


class _Clients:
    """The four tritonclient gRPC clients of one server, each as a timed call."""

    def __init__(self, port: int, x: np.ndarray, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sync = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.inp = grpcclient.InferInput("input", [1, 16], "FP32")
        self.inp.set_data_from_numpy(x)
        self.answers: queue.Queue = queue.Queue()
        self.sync.start_stream(callback=lambda result, error: self.answers.put(error))
        self.aio = aioclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.ainp = aioclient.InferInput("input", [1, 16], "FP32")
        self.ainp.set_data_from_numpy(x)
        self.requests: asyncio.Queue = asyncio.Queue()

        async def request_stream():  # type: ignore[no-untyped-def]
            while True:
                yield await self.requests.get()

        self.responses = self.aio.stream_infer(request_stream())

    def sync_unary(self) -> None:
        self.sync.infer("small", [self.inp])

    def sync_stream(self) -> None:
        self.sync.async_stream_infer("small", [self.inp])
        error = self.answers.get()
        if error is not None:
            raise error

    async def aio_unary(self) -> None:
        await self.aio.infer("small", [self.ainp])

    async def aio_stream(self) -> None:
        await self.requests.put({"model_name": "small", "inputs": [self.ainp]})
        _, error = await self.responses.__anext__()
        if error is not None:
            raise error

    def points(self, label: str) -> dict[str, object]:
        def run(call):  # type: ignore[no-untyped-def]
            return lambda n: self.loop.run_until_complete(timed_async(call, n))

        return {
            f"{label}, sync unary client": lambda n: timed(self.sync_unary, n),
            f"{label}, sync streaming client": lambda n: timed(self.sync_stream, n),
            f"{label}, asyncio unary client": run(self.aio_unary),
            f"{label}, asyncio streaming client": run(self.aio_stream),
        }

    def close(self) -> None:
        self.sync.stop_stream()
        self.sync.close()
        self.responses.cancel()
        self.loop.run_until_complete(self.aio.close())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=2000, help="per point and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args()

    repo = Path(tempfile.mkdtemp()) / "models"
    build_demo_repository(repo, models=["small"])
    engine = load_engine(
        ModelRepository(repo).model_path("small", 1), ModelRepository(repo).config("small")
    )
    x = np.random.default_rng(0).random((1, 16), dtype=np.float32)
    server = ServerProcess(
        repo, Path("var/bench/grpc_client_latency-server"), "--log-level", "warning"
    )
    port, null_port = server.grpc_port, free_port()
    server.start()
    null = null_grpc_service(null_port)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    clients: list[_Clients] = []
    try:
        for p, what in ((port, "edgetier serve"), (null_port, "null service")):
            wait_ready(grpcclient.InferenceServerClient(f"127.0.0.1:{p}"), ["small"], what)
        points: dict[str, object] = {
            "onnxruntime": lambda n: timed(lambda: engine.run({"input": x}), n)
        }
        for label, p in (("edgetier", port), ("null service", null_port)):
            clients.append(_Clients(p, x, loop))
            points.update(clients[-1].points(label))
        samples: dict[str, list[list[int]]] = {name: [] for name in points}
        for measure in points.values():  # warm-up
            measure(300)  # type: ignore[operator]
        for _ in range(args.repeats):  # interleaved, so drift hits every point alike
            for name, measure in points.items():
                samples[name].append(measure(args.requests))  # type: ignore[operator]
    finally:
        for c in clients:
            c.close()
        loop.close()
        server.stop()
        null.terminate()
        null.wait(30)

    rows = []
    for name, runs in samples.items():
        p50s = [float(np.median(r)) for r in runs]
        median_run = runs[int(np.argsort(p50s)[len(p50s) // 2])]
        summary = latency_summary(median_run)
        rows.append(
            BenchResult(
                system=name,
                protocol=None if name == "onnxruntime" else "grpc",
                tensors=None if name == "onnxruntime" else "binary",
                provider=engine.provider,
                batch_size=1,
                concurrency=1,
                throughput_per_s=1e9 / float(np.mean(median_run)),
                latency_ms=summary,
                repeats=args.repeats,
                spread_pct=100 * (max(p50s) - min(p50s)) / float(np.median(p50s)),
                requests=len(median_run),
            )
        )
    raw_p50 = rows[0].latency_ms.p50
    p50 = {r.system: r.latency_ms.p50 for r in rows}
    notes = []
    for name in samples:
        if name.startswith("edgetier, "):
            floor = p50[name.replace("edgetier, ", "null service, ")]
            notes.append(
                f"{name.removeprefix('edgetier, ')}: added p50 over raw "
                f"{p50[name] - raw_p50:.3f} ms = transport and client floor {floor:.3f} ms "
                f"+ server's own share {p50[name] - floor:.3f} ms"
            )
    notes.append("null service: a gRPC service that answers at once (benchmarks/_null_grpc.py)")
    notes.append("the row of each point is its repeat with the median p50")
    report = make_report("server", rows, model=None, notes=notes)
    save(report, args.out_dir, "grpc_client_latency")


if __name__ == "__main__":
    main()

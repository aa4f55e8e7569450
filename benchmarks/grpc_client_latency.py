"""Added gRPC latency at batch 1 on the small model, by client: sync unary and streaming.

`added_latency.py` drives the server with the asyncio load generator, whose Python client
costs a share of every round trip. This script measures the same server with tritonclient's
sync gRPC client, unary (`infer`) and streaming (`async_stream_infer`), back to back with
the raw engine, so the figure is closer to what a C++ client such as perf_analyzer sees.
Writes benchmarks/results/grpc_client_latency.json.
"""

from __future__ import annotations

import argparse
import queue
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from _harness import RESULTS, save

from edgetier.bench import BenchResult, latency_summary
from edgetier.bench._meta import make_report
from edgetier.runtime import ModelRepository, build_demo_repository, load_engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(call, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        call()
        out.append(time.perf_counter_ns() - start)
    return out


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
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "edgetier"),
            "serve",
            "--model-repository",
            str(repo),
            "--http-port",
            "0",
            "--grpc-port",
            str(port),
            "--metrics-port",
            "-1",
            "--log-level",
            "warning",
        ],
    )
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.is_model_ready("small"):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not become ready in 60 s")
            time.sleep(0.2)
        inp = grpcclient.InferInput("input", [1, 16], "FP32")
        inp.set_data_from_numpy(x)
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put(error))

        def stream_once() -> None:
            client.async_stream_infer("small", [inp])
            error = answers.get()
            if error is not None:
                raise error

        points = {
            "onnxruntime": lambda: engine.run({"input": x}),
            "edgetier, sync unary client": lambda: client.infer("small", [inp]),
            "edgetier, sync streaming client": stream_once,
        }
        samples: dict[str, list[list[int]]] = {name: [] for name in points}
        for call in points.values():  # warm-up
            _timed(call, 300)
        for _ in range(args.repeats):  # interleaved, so drift hits every point alike
            for name, call in points.items():
                samples[name].append(_timed(call, args.requests))
        client.stop_stream()
    finally:
        server.terminate()
        server.wait(30)

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
    notes = [
        f"added p50 over raw: {r.system}: {r.latency_ms.p50 - raw_p50:.3f} ms" for r in rows[1:]
    ]
    notes.append("the row of each point is its repeat with the median p50")
    report = make_report("server", rows, model=None, notes=notes)
    save(report, args.out_dir, "grpc_client_latency")


if __name__ == "__main__":
    main()

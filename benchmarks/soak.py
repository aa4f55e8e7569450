"""Soak: steady load plus churn of connections, shared memory and model reloads, for
minutes; the server's memory, descriptors and latency over time should be flat lines.

One `edgetier serve` (explicit model control) on the demo models `small` and `simple`:

- steady load: Poisson arrivals at --rate on `small` over gRPC (one long-lived client);
- churn, all the time: new HTTP connections that make one request and close, new gRPC
  channels that make one call, connections that send nothing or half a body and are
  left to the server's timeouts, shared-memory regions registered, used and removed;
- every --reload-every-s: both models reloaded while the load runs.

Every second: the server's RSS, open descriptors and threads, and the steady load's
latency p50/p99 and errors in that second. Not part of CI (it takes minutes).

    python benchmarks/soak.py --duration-s 300

Writes benchmarks/results/soak.json and docs/img/soak.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tritonclient.grpc.aio as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from edgetier.bench import RequestSender, poisson_arrivals
from edgetier.synthetic import build_demo_repository
from edgetier.testing import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PLOT = ROOT / "docs" / "img" / "soak.png"
SERVER_OPTIONS = (
    "--model-control-mode",
    "explicit",
    "--load-model",
    "*",
    "--http-header-timeout-s",
    "5",
    "--http-body-timeout-s",
    "5",
)


class Soak:
    """The load, the churn and the samples of one run."""

    def __init__(self, server: ServerProcess, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.process = psutil.Process(server.pid)
        self.latencies: list[tuple[float, float]] = []  # (answered at, seconds)
        self.errors: list[float] = []
        self.churn = {"http": 0, "grpc": 0, "idle": 0, "half_body": 0, "shm": 0, "reloads": 0}
        self.churn_errors: dict[str, int] = {}
        self.samples: list[dict[str, float]] = []
        self.start = 0.0

    async def run(self) -> None:
        self.start = time.perf_counter()
        end = self.start + self.args.duration_s
        sender = RequestSender(self.server.url("grpc"), "small", timeout_s=30)
        await sender.open()
        try:
            tasks = [
                asyncio.create_task(self.steady(sender, end)),
                asyncio.create_task(self.every(0.2, end, self.http_churn)),
                asyncio.create_task(self.every(0.5, end, self.grpc_churn)),
                asyncio.create_task(self.every(0.5, end, self.stalled)),
                asyncio.create_task(self.every(1.0, end, self.shm_churn)),
                asyncio.create_task(self.every(self.args.reload_every_s, end, self.reload)),
                asyncio.create_task(self.every(1.0, end, self.sample)),
            ]
            await asyncio.gather(*tasks)
        finally:
            await sender.close()

    async def steady(self, sender: RequestSender, end: float) -> None:
        schedule = poisson_arrivals(self.args.rate, self.args.duration_s, seed=1)
        pending: set[asyncio.Task[None]] = set()

        async def one() -> None:
            sent = time.perf_counter()
            try:
                await sender.send()
            except Exception:
                self.errors.append(time.perf_counter() - self.start)
            else:
                done = time.perf_counter()
                self.latencies.append((done - self.start, done - sent))

        for offset in schedule:
            delay = self.start + float(offset) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=30)

    async def every(self, period_s: float, end: float, action: Any) -> None:
        while time.perf_counter() < end:
            name = action.__name__
            try:
                await action()
            except Exception as exc:
                key = f"{name}: {type(exc).__name__}"
                self.churn_errors[key] = self.churn_errors.get(key, 0) + 1
            await asyncio.sleep(period_s)

    async def http_churn(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.http_port)
        writer.write(b"GET /v2/models/small HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        self.churn["http"] += 1

    async def grpc_churn(self) -> None:
        client = grpcclient.InferenceServerClient(self.server.url("grpc").removeprefix("grpc://"))
        try:
            tensor = grpcclient.InferInput("input", [1, 16], "FP32")
            tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
            await client.infer("small", [tensor])
        finally:
            await client.close()
        self.churn["grpc"] += 1

    async def stalled(self) -> None:
        """A connection that sends nothing and one that stops halfway through a body."""
        _, idle = await asyncio.open_connection("127.0.0.1", self.server.http_port)
        _, half = await asyncio.open_connection("127.0.0.1", self.server.http_port)
        half.write(b"POST /v2/models/small/infer HTTP/1.1\r\nContent-Length: 999\r\n\r\n{")
        self.churn["idle"] += 1
        self.churn["half_body"] += 1
        asyncio.get_running_loop().call_later(30, idle.close)  # the server closes first
        asyncio.get_running_loop().call_later(30, half.close)

    async def shm_churn(self) -> None:
        await asyncio.to_thread(self._shm_once)
        self.churn["shm"] += 1

    def _shm_once(self) -> None:
        key = f"soak-{uuid.uuid4().hex[:10]}"
        handle = shm.create_shared_memory_region(key, f"/{key}", 128)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{self.server.http_port}")
        try:
            shm.set_shared_memory_region(handle, [np.ones((2, 16), np.int32)])
            client.register_system_shared_memory(key, f"/{key}", 128)
            inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
            inputs[0].set_shared_memory(key, 64)
            inputs[1].set_shared_memory(key, 64, offset=64)
            client.infer("simple", inputs)
        finally:
            with contextlib.suppress(Exception):
                client.unregister_system_shared_memory(key)
            client.close()
            shm.destroy_shared_memory_region(handle)

    async def reload(self) -> None:
        if time.perf_counter() - self.start < 1:
            return  # not at the very start
        for model in ("small", "simple"):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.server.http_port)
            writer.write(
                f"POST /v2/repository/models/{model}/load HTTP/1.1\r\nHost: soak\r\n"
                f"Connection: close\r\nContent-Length: 0\r\n\r\n".encode()
            )
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        self.churn["reloads"] += 1

    async def sample(self) -> None:
        now = time.perf_counter() - self.start
        recent = [s for t, s in self.latencies if now - 1.0 <= t < now]
        with self.process.oneshot():
            row = {
                "t_s": round(now, 2),
                "rss_mib": self.process.memory_info().rss / 2**20,
                "fds": float(self.process.num_fds()),
                "threads": float(self.process.num_threads()),
                "requests": float(len(recent)),
                "errors": float(sum(now - 1.0 <= t < now for t in self.errors)),
                "p50_ms": float(np.percentile(recent, 50) * 1e3) if recent else float("nan"),
                "p99_ms": float(np.percentile(recent, 99) * 1e3) if recent else float("nan"),
            }
        self.samples.append(row)


def slope_per_min(samples: list[dict[str, float]], key: str) -> float:
    """Least-squares slope of the second half (after the start-up ramp), per minute."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return float("nan")
    t = np.array([s["t_s"] for s in half])
    y = np.array([s[key] for s in half])
    return float(np.polyfit(t, y, 1)[0] * 60)


def to_json(report: dict[str, Any]) -> str:
    """The report as JSON, one line per sample."""
    head = json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1)
    rows = ",\n  ".join(json.dumps(sample) for sample in report["samples"])
    return head[:-2] + ',\n "samples": [\n  ' + rows + "\n ]\n}\n"


def plot(samples: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(t, [s["rss_mib"] for s in samples], color="tab:blue")
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [s["fds"] for s in samples], color="tab:green", label="open descriptors")
    axes[1].plot(t, [s["threads"] for s in samples], color="tab:gray", label="threads")
    axes[1].set_ylabel("count")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="upper right")
    axes[2].plot(t, [s["p50_ms"] for s in samples], color="tab:orange", label="p50")
    axes[2].plot(t, [s["p99_ms"] for s in samples], color="tab:red", label="p99")
    axes[2].set_ylabel("latency (ms)")
    axes[2].set_xlabel("minutes")
    axes[2].set_yscale("log")
    axes[2].legend(loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=200.0, help="steady requests per second")
    parser.add_argument("--reload-every-s", type=float, default=10.0)
    parser.add_argument("--repo", type=Path, default=Path("var/bench/soak-models"))
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    build_demo_repository(args.repo, models=["small", "simple"])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = shlex.join(["python", "benchmarks/soak.py", *sys.argv[1:]])
    load_before = os.getloadavg()
    logs = Path("var/bench/soak-server")
    with ServerProcess(args.repo, logs, *SERVER_OPTIONS, metrics=True, wait_ready=True) as server:
        soak = Soak(server, args)
        asyncio.run(soak.run())
    samples = soak.samples
    summary = {
        "requests": len(soak.latencies),
        "errors": len(soak.errors),
        "churn": soak.churn,
        "churn_errors": soak.churn_errors,
        "rss_mib_first_last": [samples[0]["rss_mib"], samples[-1]["rss_mib"]],
        "rss_mib_per_min_second_half": slope_per_min(samples, "rss_mib"),
        "fds_first_max_last": [
            samples[0]["fds"],
            max(s["fds"] for s in samples),
            samples[-1]["fds"],
        ],
        "fds_per_min_second_half": slope_per_min(samples, "fds"),
        "p99_ms_median": float(np.nanmedian([s["p99_ms"] for s in samples])),
    }
    report = {
        "command": command,
        "started": started,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "summary": summary,
        "samples": samples,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "soak.json").write_text(to_json(report))
    plot(samples, args.plot, f"{command}  ({started}, {os.cpu_count()} shared vCPUs)")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out_dir / 'soak.json'} and {args.plot}")


if __name__ == "__main__":
    main()

"""Admission by queue time at 150 % of capacity, on ResNet-50 and the small demo model.

Each round, for each model in turn (interleaved, so that the machine's drift hits both):
capacity is the closed-loop throughput at saturation (batch 1); then Poisson arrivals at
1.5 x capacity for --duration-s, each request served, refused (503) or failed. Requests
go over HTTP/1.1 keep-alive connections with binary tensors, from a minimal client that
sends one prebuilt request (a few tens of microseconds of CPU each): a Python KServe
client costs about what the server does per request, so on a small machine it could not
offer 1.5 x the server's capacity for the small model. Per model, the medians over
rounds of:

- the admitted requests' queue wait p99, from the server's edgetier_queue_wait_us
  histogram (the upper bound of the bucket that holds the 99th percentile), against the
  model's budget (dynamic_batching.max_queue_wait_microseconds);
- the refusals' latency p99 at the client, from the moment each was sent;
- the admitted throughput over the capacity of the same round.

    python benchmarks/admission.py --rounds 3 --duration-s 10

Writes benchmarks/results/admission.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from edgetier.bench import poisson_arrivals
from edgetier.synthetic import build_demo_repository
from edgetier.testing import ServerProcess, edit_config

RESULTS = Path(__file__).parent / "results"
OVERLOAD = 1.5

# model -> (budget in us, closed-loop concurrency that saturates it, extra batching config)
MODELS: dict[str, tuple[int, int, dict[str, int]]] = {
    "resnet50": (1_000_000, 16, {"max_queue_delay_microseconds": 2000}),
    "small": (10_000, 256, {}),
}


@dataclass
class Round:
    """One model's figures in one round."""

    model: str
    budget_us: int
    capacity_per_s: float
    offered_per_s: float
    sent_per_s: float
    admitted_per_s: float
    throughput_ratio: float
    refused_fraction: float
    errors: int
    error_kinds: str
    queue_wait_p99_us: float
    refusal_p99_ms: float
    refusal_p50_ms: float
    refusal_p99_from_schedule_ms: float
    admitted_p99_ms: float
    late_sends: int
    server_cpu_capacity_pct: float
    server_cpu_overload_pct: float
    client_cpu_overload_pct: float
    batch_rows_capacity: float
    batch_rows_overload: float
    batch_ms_capacity: float
    batch_ms_overload: float


class Phases:
    """CPU of the server and of this client, and the model's batches, phase by phase."""

    def __init__(self, server: ServerProcess, model: str) -> None:
        self.server = psutil.Process(server.pid)
        self.client = psutil.Process()
        self.stats_url = f"http://127.0.0.1:{server.http_port}/v2/models/{model}/stats"
        self.marks: list[tuple[float, float, float, float, float, float]] = []

    def mark(self) -> None:
        with urllib.request.urlopen(self.stats_url, timeout=30) as answer:
            stats = json.loads(answer.read())["model_stats"][0]["batch_stats"]
        batches = sum(b["compute_infer"]["count"] for b in stats)
        rows = sum(b["batch_size"] * b["compute_infer"]["count"] for b in stats)
        compute_ns = sum(b["compute_infer"]["ns"] for b in stats)
        server, client = self.server.cpu_times(), self.client.cpu_times()
        self.marks.append(
            (
                time.perf_counter(),
                server.user + server.system,
                client.user + client.system,
                batches,
                rows,
                compute_ns,
            )
        )

    def figures(self) -> dict[str, float]:
        (t0, s0, _, b0, r0, n0), (t1, s1, c1, b1, r1, n1), (t2, s2, c2, b2, r2, n2) = self.marks
        return {
            "server_cpu_capacity_pct": 100 * (s1 - s0) / (t1 - t0),
            "server_cpu_overload_pct": 100 * (s2 - s1) / (t2 - t1),
            "client_cpu_overload_pct": 100 * (c2 - c1) / (t2 - t1),
            "batch_rows_capacity": (r1 - r0) / max(1, b1 - b0),
            "batch_rows_overload": (r2 - r1) / max(1, b2 - b1),
            "batch_ms_capacity": (n1 - n0) / max(1, b1 - b0) / 1e6,
            "batch_ms_overload": (n2 - n1) / max(1, b2 - b1) / 1e6,
        }


MAX_CONNECTIONS = 256
"""The client's connections, so requests in flight: arrivals beyond wait in the client
(counted in the latency from their scheduled time, not in that from their sending)."""


class RawClient:
    """HTTP/1.1 keep-alive connections that send one prebuilt infer request, up to
    MAX_CONNECTIONS at once (opened as needed)."""

    def __init__(self, port: int, model: str) -> None:
        self.port = port
        self.model = model
        self.request = b""
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def open(self) -> None:
        url = f"http://127.0.0.1:{self.port}/v2/models/{self.model}"
        with urllib.request.urlopen(url, timeout=30) as answer:
            meta = json.loads(answer.read())
        tensors, blobs = [], []
        for spec in meta["inputs"]:
            shape = [1 if d < 0 else d for d in spec["shape"]]
            shape[0] = 1
            data = np.random.default_rng(0).standard_normal(shape).astype(np.float32).tobytes()
            tensors.append(
                {
                    "name": spec["name"],
                    "datatype": spec["datatype"],
                    "shape": shape,
                    "parameters": {"binary_data_size": len(data)},
                }
            )
            blobs.append(data)
        outputs = [
            {"name": o["name"], "parameters": {"binary_data": True}} for o in meta["outputs"]
        ]
        header = json.dumps({"inputs": tensors, "outputs": outputs}).encode()
        body = header + b"".join(blobs)
        self.request = (
            f"POST /v2/models/{self.model}/infer HTTP/1.1\r\nHost: bench\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {len(header)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def acquire(self) -> None:
        """Wait for a free connection slot (then send() may be called once)."""
        await self._slots.acquire()

    async def send(self) -> int:
        """One request on a slot taken with acquire(); its HTTP status."""
        try:
            return await self._send()
        finally:
            self._slots.release()

    async def _send(self) -> int:
        if self._idle:
            connection = self._idle.pop()
        else:
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(_Connection, "127.0.0.1", self.port)
        status, close = await connection.exchange(self.request)
        if close:
            connection.transport.close()
        else:
            self._idle.append(connection)
        return status

    async def close(self) -> None:
        for connection in self._idle:
            connection.transport.close()
        self._idle.clear()


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time, parsed as the bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._buffer = bytearray()
        self._answer: asyncio.Future[tuple[int, bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send the request; (status, whether the server closes) of its answer."""
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._answer

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._answer is None:
            return
        head = bytes(self._buffer[:end]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at) % (len(head) + 1)]) if at >= 0 else 0
        if len(self._buffer) < end + 4 + length:
            return
        del self._buffer[: end + 4 + length]
        answer, self._answer = self._answer, None
        if not answer.done():
            answer.set_result((int(head[9:12]), b"connection: close" in head))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError("the server closed the connection"))


async def saturate(
    client: RawClient, concurrency: int, duration_s: float, warmup_s: float
) -> float:
    """Closed loop: requests served per second with ``concurrency`` always in flight."""
    served = 0
    start = time.perf_counter()
    window = start + warmup_s
    end = window + duration_s

    async def worker() -> None:
        nonlocal served
        while time.perf_counter() < end:
            await client.acquire()
            status = await client.send()
            if status == 200 and time.perf_counter() >= window:
                served += 1
            elif status != 200:
                await asyncio.sleep(0.001)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return served / (time.perf_counter() - window)


async def overload(
    client: RawClient, rate_per_s: float, duration_s: float, warmup_s: float, seed: int
) -> tuple[list[tuple[float, float, float, str]], int]:
    """Open loop: (scheduled, sent, answered, outcome) of each request, in seconds from
    the start of the schedule (the window is [warmup_s, warmup_s + duration_s))."""
    schedule = poisson_arrivals(rate_per_s, warmup_s + duration_s, seed=seed)
    records: list[tuple[float, float, float, str]] = []
    tasks: set[asyncio.Task[None]] = set()
    base = time.perf_counter() + 0.01
    late = 0

    async def one(scheduled: float) -> None:
        await client.acquire()
        sent = time.perf_counter()
        try:
            status = await client.send()
        except OSError:
            status = 0
        outcome = {200: "served", 503: "refused"}.get(status, f"error {status}")
        records.append((scheduled - base, sent - base, time.perf_counter() - base, outcome))

    for offset in schedule:
        scheduled = base + float(offset)
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.001 and offset >= warmup_s:
            late += 1
        task = asyncio.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=120)
    return records, late


def p99_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound (us) of the histogram bucket holding the 99th percentile."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]  # cumulative
    total = counts[-1]
    if total <= 0:
        return float("nan")
    for bound, count in zip(bounds, counts, strict=True):
        if count >= 0.99 * total:
            return bound
    return float("inf")


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1e3) if values else float("nan")


async def measure(server: ServerProcess, model: str, args: argparse.Namespace, seed: int) -> Round:
    budget_us, concurrency, _ = MODELS[model]
    client = RawClient(server.http_port, model)
    await client.open()
    phases = Phases(server, model)
    try:
        phases.mark()
        capacity = await saturate(client, concurrency, args.duration_s, args.warmup_s)
        phases.mark()
        rate = capacity * OVERLOAD
        before = histogram(server, "edgetier_queue_wait_us", model)
        records, late = await overload(client, rate, args.duration_s, args.warmup_s, seed)
        after = histogram(server, "edgetier_queue_wait_us", model)
        phases.mark()
    finally:
        await client.close()
    start, end = args.warmup_s, args.warmup_s + args.duration_s
    sent = [r for r in records if start <= r[1] < end]  # what the client got out in the window
    served = [r for r in sent if r[3] == "served"]
    refused = [r for r in sent if r[3] == "refused"]
    # throughput: answers that came back inside the window, whenever they were sent
    admitted_per_s = sum(r[3] == "served" and start <= r[2] < end for r in records) / (end - start)
    return Round(
        model=model,
        budget_us=budget_us,
        capacity_per_s=capacity,
        offered_per_s=rate,
        admitted_per_s=admitted_per_s,
        throughput_ratio=admitted_per_s / capacity,
        sent_per_s=len(sent) / (end - start),
        refused_fraction=len(refused) / max(1, len(sent)),
        errors=sum(r[3].startswith("error") for r in sent),
        error_kinds=", ".join(sorted({r[3] for r in sent if r[3].startswith("error")})),
        queue_wait_p99_us=p99_bound(before, after),
        refusal_p99_ms=percentile_ms([r[2] - r[1] for r in refused], 99),
        refusal_p50_ms=percentile_ms([r[2] - r[1] for r in refused], 50),
        refusal_p99_from_schedule_ms=percentile_ms([r[2] - r[0] for r in refused], 99),
        admitted_p99_ms=percentile_ms([r[2] - r[1] for r in served], 99),
        late_sends=late,
        **phases.figures(),
    )


def prepare(repo: Path) -> None:
    build_demo_repository(repo, models=list(MODELS))
    for model, (budget_us, _, batching) in MODELS.items():
        edit_config(
            repo,
            model,
            dynamic_batching={**batching, "max_queue_wait_microseconds": budget_us},
        )


async def run(args: argparse.Namespace) -> list[Round]:
    rounds: list[Round] = []
    logs = Path("var/bench/admission-server")
    with ServerProcess(args.repo, logs, metrics=True, wait_ready=True) as server:
        for index in range(args.rounds):
            order = args.models if index % 2 == 0 else list(reversed(args.models))
            for model in order:
                row = await measure(server, model, args, seed=index)
                rounds.append(row)
                print(json.dumps(asdict(row)), flush=True)
    return rounds


def summary(rounds: list[Round]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(r.model for r in rounds):
        rows = [asdict(r) for r in rounds if r.model == model]
        out[model] = {
            key: statistics.median(row[key] for row in rows)
            for key in rows[0]
            if isinstance(rows[0][key], int | float)
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--repo", type=Path, default=Path("var/bench/admission-models"))
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    prepare(args.repo)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = os.getloadavg()
    rounds = uvloop.run(run(args))
    medians = summary(rounds)
    report: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/admission.py", *sys.argv[1:]]),
        "started": started,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "overload": OVERLOAD,
        "medians": medians,
        "rounds": [asdict(r) for r in rounds],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "admission.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(
        "| model | budget | capacity/s | admitted/s | ratio | refused | queue wait p99 "
        "| refusal p99 | refusal p50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model, m in medians.items():
        print(
            f"| {model} | {m['budget_us'] / 1e3:g} ms | {m['capacity_per_s']:.1f} "
            f"| {m['admitted_per_s']:.1f} | {m['throughput_ratio']:.2f} "
            f"| {m['refused_fraction']:.0%} | <= {m['queue_wait_p99_us'] / 1e3:g} ms "
            f"| {m['refusal_p99_ms']:.1f} ms | {m['refusal_p50_ms']:.1f} ms |"
        )
    print(f"wrote {path}")


def histogram(server: ServerProcess, name: str, model: str) -> dict[float, float]:
    """A histogram of the server's metrics for one model: upper bound -> count."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(server.metrics_text()):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and sample.labels.get("model") == model:
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


if __name__ == "__main__":
    main()

"""Shared bits of the benchmark scripts: options, merging runs, writing results."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from edgetier.bench import BenchReport, BenchResult, render_markdown

RESULTS = Path(__file__).parent / "results"


def options(description: str, *, duration_s: float = 5.0) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--duration-s", type=float, default=duration_s, help="per measurement point")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--peer-python", type=Path, default=None)
    return p.parse_args()


def command() -> str:
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def relabel(report: BenchReport, system: str) -> list[BenchResult]:
    return [r.model_copy(update={"system": system}) for r in report.results]


def merge(reports: list[BenchReport], results: list[BenchResult] | None = None) -> BenchReport:
    """One report from several runs of the same script: the first run's metadata."""
    first = reports[0]
    notes = list(dict.fromkeys(n for r in reports for n in r.notes))
    rows = results if results is not None else [x for r in reports for x in r.results]
    return first.model_copy(update={"results": rows, "notes": notes, "command": command()})


def save(report: BenchReport, out_dir: Path, stem: str) -> Path:
    path = report.model_copy(update={"command": command()}).write(out_dir / f"{stem}.json")
    print(render_markdown(BenchReport.read(path)))
    print(f"wrote {path}")
    return path


def timed(call: Callable[[], object], n: int) -> list[int]:
    """Latencies in ns of ``n`` calls made one after the other."""
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        call()
        out.append(time.perf_counter_ns() - start)
    return out


async def timed_async(call: Callable[[], Awaitable[object]], n: int) -> list[int]:
    """Latencies in ns of ``n`` awaited calls made one after the other."""
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await call()
        out.append(time.perf_counter_ns() - start)
    return out


def null_grpc_service(port: int) -> subprocess.Popen[bytes]:
    """A gRPC inference service that answers at once (_null_grpc.py): the transport floor."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "_null_grpc.py"), str(port)]
    )


def wait_ready(client: Any, models: Sequence[str], what: str, timeout_s: float = 60) -> None:
    """Wait until a tritonclient ``client`` sees every model ready; exit after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if all(client.is_model_ready(m) for m in models):
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not become ready in {timeout_s:.0f} s")
        time.sleep(0.2)

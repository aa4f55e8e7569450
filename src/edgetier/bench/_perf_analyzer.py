"""Triton's perf_analyzer, where a machine has it: run it and read its CSV.

perf_analyzer is not on PyPI (the ``perf-analyzer`` name is a placeholder without a
binary); where it is on PATH, ``edgetier bench server --perf-analyzer`` runs it with the
same sweep and turns its CSV (latencies in microseconds) into :class:`BenchResult` rows.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgetier.bench._loadgen import parse_url
from edgetier.bench._schema import BenchResult, LatencyMs, Protocol, TensorEncoding
from edgetier.errors import ConfigError, UnsupportedError

__all__ = ["parse_perf_analyzer_csv", "perf_analyzer_path", "run_perf_analyzer"]

NOT_FOUND = (
    "perf_analyzer is not on PATH (it ships with Triton's SDK container or the "
    "tritonclient C++ build, not on PyPI); run without --perf-analyzer to use EdgeTier's "
    "own load generator"
)


def perf_analyzer_path() -> str | None:
    return shutil.which("perf_analyzer")


def parse_perf_analyzer_csv(
    text: str, *, system: str, protocol: Protocol, tensors: TensorEncoding, batch_size: int
) -> list[BenchResult]:
    """Rows of a perf_analyzer ``-f`` CSV (concurrency or request-rate mode) as results."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ConfigError("perf_analyzer CSV holds no rows")
    results = []
    for row in rows:
        conc = row.get("Concurrency")
        rate = row.get("Request Rate")
        us = {
            k: float(row[k])
            for k in ("p50 latency", "p90 latency", "p95 latency", "p99 latency", "Avg latency")
        }
        results.append(
            BenchResult(
                system=system,
                protocol=protocol,
                tensors=tensors,  # type: ignore[arg-type]
                provider="unknown",
                batch_size=batch_size,
                concurrency=int(float(conc)) if conc else None,
                offered_rate_per_s=float(rate) if rate else None,
                throughput_per_s=float(row["Inferences/Second"]),
                latency_ms=LatencyMs(
                    mean=us["Avg latency"] / 1e3,
                    p50=us["p50 latency"] / 1e3,
                    p90=us["p90 latency"] / 1e3,
                    p95=us["p95 latency"] / 1e3,
                    p99=us["p99 latency"] / 1e3,
                    max=None,
                ),
            )
        )
    return results


def run_perf_analyzer(
    url: str,
    model: str,
    *,
    batch_size: int,
    concurrency: list[int],
    rates: list[float],
    tensors: TensorEncoding,
    duration_s: float,
    system: str = "edgetier",
) -> list[BenchResult]:
    """Run perf_analyzer once per sweep point and parse its CSV output."""
    exe = perf_analyzer_path()
    if exe is None:
        raise UnsupportedError(NOT_FOUND)
    if tensors == "json":
        raise ConfigError("perf_analyzer sends binary or shm tensors, not json")
    protocol, address = parse_url(url)
    base = [
        exe,
        "-m",
        model,
        "-u",
        address,
        "-i",
        protocol,
        "-b",
        str(batch_size),
        "--measurement-interval",
        str(int(duration_s * 1000)),
    ]
    if tensors == "shm":
        base += ["--shared-memory", "system"]
    points = [["--concurrency-range", f"{c}:{c}"] for c in concurrency]
    points += [
        ["--request-rate-range", f"{r:g}:{r:g}", "--request-distribution", "poisson"] for r in rates
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgetier-pa-") as tmp:
        for i, point in enumerate(points):
            out = Path(tmp) / f"{i}.csv"
            proc = subprocess.run(
                [*base, *point, "-f", str(out)], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise UnsupportedError(
                    f"perf_analyzer failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
                )
            results += parse_perf_analyzer_csv(
                out.read_text(),
                system=system,
                protocol=protocol,
                tensors=tensors,
                batch_size=batch_size,
            )
    return results

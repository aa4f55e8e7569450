"""Statistics of a benchmark: latency percentiles, repeats, medians and spread.

Percentiles use numpy's default (linear interpolation), so figures match what a reader
gets from ``numpy.percentile`` on the raw samples.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence

import numpy as np

from edgetier.bench._schema import BenchResult, LatencyMs
from edgetier.errors import ConfigError

__all__ = [
    "SPREAD_WARN_PCT",
    "SpreadWarning",
    "latency_summary",
    "merge_repeats",
    "spread_pct",
]

SPREAD_WARN_PCT = 10.0


class SpreadWarning(UserWarning):
    """Emitted when repeats of one configuration disagree by more than 10 %."""


def latency_summary(latencies_ns: Sequence[int] | np.ndarray) -> LatencyMs:
    """Mean, p50, p90, p95, p99 and max in milliseconds of latencies given in nanoseconds."""
    samples = np.asarray(latencies_ns, dtype=np.float64)
    if samples.size == 0:
        raise ConfigError("latency samples must hold at least 1 value, got 0")
    ms = samples / 1e6
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return LatencyMs(
        mean=float(ms.mean()),
        p50=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        max=float(ms.max()),
    )


def spread_pct(values: Sequence[float]) -> float:
    """(max - min) / median of repeated measurements, in percent; 0 for a single value."""
    if not values:
        raise ConfigError("spread needs at least 1 value, got 0")
    median = statistics.median(values)
    if len(values) == 1 or median == 0:
        return 0.0
    return float((max(values) - min(values)) / abs(median) * 100.0)


def _median_opt(values: Sequence[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def merge_repeats(repeats: Sequence[BenchResult], *, label: str = "") -> BenchResult:
    """One result from N repeats of the same configuration: medians, and the spread.

    The spread is that of throughput (the figure runs are compared on); a
    :class:`SpreadWarning` names the configuration when it exceeds 10 %.
    """
    if not repeats:
        raise ConfigError("repeats must hold at least 1 result, got 0")
    first = repeats[0]
    throughputs = [r.throughput_per_s for r in repeats]
    spread = spread_pct(throughputs)
    if spread > SPREAD_WARN_PCT:
        warnings.warn(
            f"{label or first.system}: throughput spread over {len(repeats)} repeats is "
            f"{spread:.1f} %, above {SPREAD_WARN_PCT:.0f} %; the machine is noisy, "
            "use more repeats or a quieter machine",
            SpreadWarning,
            stacklevel=2,
        )
    latency = LatencyMs.model_validate(
        {
            key: _median_opt([getattr(r.latency_ms, key) for r in repeats])
            for key in LatencyMs.model_fields
        }
    )
    peak = [r.peak_memory_bytes for r in repeats if r.peak_memory_bytes is not None]
    energy = _median_opt([r.energy_j_per_inference for r in repeats])
    return first.model_copy(
        update={
            "throughput_per_s": float(statistics.median(throughputs)),
            "latency_ms": latency,
            "cpu_percent": _median_opt([r.cpu_percent for r in repeats]),
            "client_cpu_percent": _median_opt([r.client_cpu_percent for r in repeats]),
            "gpu_util_percent": _median_opt([r.gpu_util_percent for r in repeats]),
            "peak_memory_bytes": max(peak) if peak else None,
            "energy_j_per_inference": energy,
            "repeats": len(repeats),
            "spread_pct": spread,
            "round_throughput_per_s": throughputs if len(repeats) > 1 else None,
            "round_p50_ms": [r.latency_ms.p50 for r in repeats] if len(repeats) > 1 else None,
            "requests": sum(r.requests for r in repeats),
            "errors": sum(r.errors for r in repeats),
        }
    )

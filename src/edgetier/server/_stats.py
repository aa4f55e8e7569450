"""Per model-version counters behind the statistics extension and the Prometheus metrics.

Plain integers updated on the event loop for each request (its whole time in the server,
decoding included); executions and batch sizes come from the batcher's own statistics.
Both the statistics endpoints and the metrics read them, so nothing is counted twice.
"""

from __future__ import annotations

import bisect
import time
from typing import Any

from edgetier.batching import BatcherStats

DURATION_BUCKETS_US: tuple[int, ...] = BatcherStats.QUEUE_WAIT_BUCKETS_US
"""Upper bounds of the request-duration histogram (the batcher's queue-wait bounds)."""


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


class VersionStats:
    """Counters of one model version, in Triton's statistics terms."""

    __slots__ = (
        "compute_infer_ns",
        "duration_histogram",
        "fail_count",
        "fail_ns",
        "inference_count",
        "last_inference_ms",
        "queue_ns",
        "success_count",
        "success_ns",
    )

    def __init__(self) -> None:
        self.success_count = 0
        self.success_ns = 0
        self.fail_count = 0
        self.fail_ns = 0
        self.queue_ns = 0
        self.compute_infer_ns = 0
        self.inference_count = 0
        self.last_inference_ms = 0
        # requests (answered or failed) by duration: [i] counts those up to
        # DURATION_BUCKETS_US[i] (and over the one before); the last counts longer ones
        self.duration_histogram = [0] * (len(DURATION_BUCKETS_US) + 1)

    def _count_duration(self, duration_ns: int) -> None:
        self.duration_histogram[bisect.bisect_left(DURATION_BUCKETS_US, duration_ns / 1000)] += 1

    def record_success(self, rows: int, duration_ns: int, queue_ns: int, compute_ns: int) -> None:
        """One request answered: ``rows`` inferences (its batch dimension)."""
        self.success_count += 1
        self.success_ns += duration_ns
        self.queue_ns += queue_ns
        self.compute_infer_ns += compute_ns
        self.inference_count += rows
        self.last_inference_ms = time.time_ns() // 1_000_000
        self._count_duration(duration_ns)

    def record_failure(self, duration_ns: int) -> None:
        """One request that reached the model and failed."""
        self.fail_count += 1
        self.fail_ns += duration_ns
        self._count_duration(duration_ns)

    def to_json(
        self, name: str, version: int, provider: str, batcher: BatcherStats
    ) -> dict[str, Any]:
        """Triton's statistics layout for this version; executions come from the batcher."""
        zero = _duration(0, 0)
        batches = sorted(
            (size, (count, batcher.batch_compute_ns.get(size, 0)))
            for size, count in batcher.batch_histogram.items()
        )
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": batcher.execution_count,
            "inference_stats": {
                "success": _duration(self.success_count, self.success_ns),
                "fail": _duration(self.fail_count, self.fail_ns),
                "queue": _duration(self.success_count, self.queue_ns),
                "compute_input": zero,
                "compute_infer": _duration(self.success_count, self.compute_infer_ns),
                "compute_output": zero,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": _duration(count, 0),
                    "compute_infer": _duration(count, ns),
                    "compute_output": _duration(count, 0),
                }
                for size, (count, ns) in batches
            ],
            "memory_usage": [],
            "execution_provider": provider,
        }

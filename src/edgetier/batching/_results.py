"""What the batcher hands back: one request's :class:`BatchResult` and the :class:`BatcherStats`.

The stats hold everything Triton's statistics extension and its Prometheus metrics are
built from (``nv_inference_count``, ``nv_inference_exec_count``, queue and compute
durations, per-batch-size counts), so the server never has to time requests itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import numpy.typing as npt

Tensors: TypeAlias = dict[str, npt.NDArray[Any]]
"""The batch contract: tensors by name, the batch along axis 0."""


@dataclass(slots=True)
class BatchResult:
    """One request's answer.

    ``outputs`` holds this request's rows only (views into the batch's arrays when the
    request shared its batch, the arrays ``execute`` returned when it ran alone).
    """

    outputs: Tensors
    queue_ns: int
    """Time from submit() until a worker started on its batch."""
    compute_ns: int
    """Time of the execute() call of its batch."""
    batch_size: int
    """Rows of the batch it ran in (1 for a model without a batch dimension)."""


QUEUE_WAIT_BUCKETS_US: tuple[int, ...] = (
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
)
"""Upper bounds (inclusive, microseconds) of the queue-wait histogram's buckets."""


@dataclass(slots=True)
class BatcherStats:
    """Counters of one batcher since it was made (a snapshot: reading it costs a copy).

    Requests are counted once each: ``success_count`` + ``failure_count`` is every request
    that has finished or been refused; ``rejected_count``, ``timeout_count`` and
    ``cancelled_count`` are the parts of ``failure_count`` refused at once (full queue,
    batcher not running), expired in the queue, or abandoned by their caller. Durations
    are sums over successful requests (queue) and successful executions (compute), in
    nanoseconds of the batcher's clock.
    """

    success_count: int = 0
    failure_count: int = 0
    rejected_count: int = 0
    timeout_count: int = 0
    cancelled_count: int = 0
    inference_count: int = 0
    """Rows inferred (Triton's ``nv_inference_count``)."""
    execution_count: int = 0
    """Successful execute() calls, i.e. batches (Triton's ``nv_inference_exec_count``)."""
    queue_ns: int = 0
    compute_input_ns: int = 0
    """Time spent merging requests into a batch (np.concatenate)."""
    compute_ns: int = 0
    """Time inside execute() (Triton's ``compute_infer``)."""
    compute_output_ns: int = 0
    """Time spent checking and splitting the outputs back to their requests."""
    batch_histogram: dict[int, int] = field(default_factory=dict)
    """Batch rows -> number of successful executions of that size."""
    batch_compute_ns: dict[int, int] = field(default_factory=dict)
    """Batch rows -> summed execute() time of those executions (Triton's batch_stats)."""
    queue_depth: int = 0
    """Requests waiting in the queue when the snapshot was taken."""
    in_flight: int = 0
    """Batches executing when the snapshot was taken (at most instance_count)."""
    queue_wait_histogram: list[int] = field(
        default_factory=lambda: [0] * (len(QUEUE_WAIT_BUCKETS_US) + 1)
    )
    """Successful requests per queue-wait bucket: ``[i]`` counts waits of at most
    ``QUEUE_WAIT_BUCKETS_US[i]`` (and over the one before); the last counts longer waits."""

    QUEUE_WAIT_BUCKETS_US: ClassVar[tuple[int, ...]] = QUEUE_WAIT_BUCKETS_US

    def copy(self) -> BatcherStats:
        """A snapshot that later updates do not change."""
        return BatcherStats(
            success_count=self.success_count,
            failure_count=self.failure_count,
            rejected_count=self.rejected_count,
            timeout_count=self.timeout_count,
            cancelled_count=self.cancelled_count,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
            queue_ns=self.queue_ns,
            compute_input_ns=self.compute_input_ns,
            compute_ns=self.compute_ns,
            compute_output_ns=self.compute_output_ns,
            batch_histogram=dict(self.batch_histogram),
            batch_compute_ns=dict(self.batch_compute_ns),
            queue_depth=self.queue_depth,
            in_flight=self.in_flight,
            queue_wait_histogram=list(self.queue_wait_histogram),
        )

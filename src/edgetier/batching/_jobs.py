"""Queued requests, the batches made of them, and the merge and split around execute().

A batch of one request passes its arrays through untouched (no copy either way); a larger
batch concatenates each input once and hands every request views of its own output rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from edgetier.batching._results import BatchResult, Tensors
from edgetier.errors import EdgeTierError

# Request states. A request leaves QUEUED exactly once: taken into a batch, or failed.
QUEUED = 0
TAKEN = 1
DONE = 2

ShapeKey = tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...]
"""Names, dtypes and non-batch shapes of a request's inputs: equal keys may be merged."""


class Request:
    """One submit() call waiting in the queue or running in a batch."""

    __slots__ = (
        "deadline",
        "enqueued",
        "future",
        "inputs",
        "key",
        "level",
        "rows",
        "state",
        "timeout_us",
    )

    def __init__(
        self,
        inputs: Tensors,
        rows: int,
        key: ShapeKey | None,
        level: int,
        enqueued: float,
        timeout_us: int,
        future: asyncio.Future[BatchResult],
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.level = level
        self.enqueued = enqueued
        self.timeout_us = timeout_us
        self.deadline = enqueued + timeout_us / 1e6 if timeout_us else float("inf")
        self.future = future
        self.state = QUEUED


class Job:
    """A batch handed to a worker thread, and what the worker found."""

    __slots__ = (
        "end",
        "error",
        "exec_end",
        "exec_start",
        "full",
        "requests",
        "results",
        "rows",
        "start",
    )

    def __init__(self, requests: list[Request], rows: int) -> None:
        self.requests = requests
        self.rows = rows
        self.results: list[Tensors] = []
        self.error: BaseException | None = None
        self.start = self.exec_start = self.exec_end = self.end = 0.0
        self.full = False  # taken while more requests waited: as large as the queue allowed

    def run(
        self,
        execute: Callable[[Tensors], Tensors],
        clock: Callable[[], float],
        batched: bool,
    ) -> None:
        """Merge, execute and split; any exception is kept for every caller of the batch."""
        requests = self.requests
        self.start = clock()
        try:
            if len(requests) == 1:
                inputs = requests[0].inputs
            else:
                inputs = {
                    name: stack_rows([r.inputs[name] for r in requests])
                    for name in requests[0].inputs
                }
            self.exec_start = clock()
            outputs = execute(inputs)
            self.exec_end = clock()
            self.results = split_outputs(outputs, requests, self.rows, batched)
        except BaseException as exc:  # delivered to the callers, never lost in the thread
            self.error = exc
            if not self.exec_end:
                self.exec_end = clock()
        self.end = clock()


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def stack_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays joined along dim 0, as a view where they already lie back to back.

    A caller that writes its requests into consecutive rows of one batch buffer (the video
    pipelines letterbox frames into such slabs) gets its batch without a copy; anything
    else is concatenated.
    """
    first = arrays[0]
    base = first.base
    if isinstance(base, np.ndarray) and base.flags.c_contiguous and first.flags.c_contiguous:
        origin = _address(base)
        start = offset = _address(first) - origin
        rows = 0
        for array in arrays:
            if (
                array.base is not base
                or _address(array) - origin != offset
                or array.dtype != first.dtype
                or array.shape[1:] != first.shape[1:]
                or not array.flags.c_contiguous
            ):
                break
            offset += array.nbytes
            rows += array.shape[0]
        else:
            if start >= 0 and offset <= base.nbytes:
                view: np.ndarray = np.ndarray(
                    (rows, *first.shape[1:]), first.dtype, buffer=base, offset=start
                )
                return view
    return np.concatenate(arrays)


def split_outputs(outputs: Any, requests: list[Request], rows: int, batched: bool) -> list[Tensors]:
    """Check execute()'s outputs and give each request its own rows, in order."""
    if not isinstance(outputs, dict):
        raise EdgeTierError(
            f"execute must return a dict of numpy arrays, got {type(outputs).__name__}"
        )
    if not batched:
        return [outputs]
    for name, array in outputs.items():
        if not isinstance(array, np.ndarray) or array.ndim == 0:
            raise EdgeTierError(
                f"execute returned output {name!r} without a batch dimension "
                f"({type(array).__name__}); expected {rows} rows (the rows of the batch)"
            )
        if array.shape[0] != rows:
            raise EdgeTierError(
                f"execute returned {array.shape[0]} rows for output {name!r}, "
                f"expected {rows} (the rows of the batch)"
            )
    if len(requests) == 1:
        return [outputs]
    results: list[Tensors] = []
    start = 0
    for request in requests:
        stop = start + request.rows
        results.append({name: array[start:stop] for name, array in outputs.items()})
        start = stop
    return results

"""Helpers for the batcher tests: a clock the test moves, and an engine it can hold."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

Tensors = dict[str, np.ndarray]


class FakeClock:
    """A monotonic clock that moves only when told (read from worker threads too)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class GatedEngine:
    """execute() that records each batch and waits while the gate is closed.

    Outputs are ``y = x * 10`` for every input named ``x``; ``compute_s`` moves a fake
    clock inside execute so that compute times are known exactly.
    """

    def __init__(self, *, clock: FakeClock | None = None, compute_s: float = 0.0) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[Tensors] = []
        self.clock = clock
        self.compute_s = compute_s
        self.running = 0
        self.max_running = 0
        self.error: BaseException | None = None
        self.transform: Callable[[Tensors], Any] | None = None
        self._lock = threading.Lock()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, inputs: Tensors) -> Any:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.batches.append({k: np.array(v, copy=True) for k, v in inputs.items()})
        try:
            if not self.gate.wait(timeout=10):
                raise RuntimeError("test gate never opened")
            if self.clock is not None and self.compute_s:
                self.clock.advance(self.compute_s)
            if self.error is not None:
                raise self.error
            if self.transform is not None:
                return self.transform(inputs)
            return {"y": inputs["x"] * 10}
        finally:
            with self._lock:
                self.running -= 1

    @property
    def sizes(self) -> list[int]:
        return [len(b["x"]) if np.ndim(b["x"]) else 1 for b in self.batches]


async def settle(rounds: int = 10) -> None:
    """Let every ready callback and task on the loop run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until a worker thread has done something (bounded, never asserts a duration)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


def rows(start: int, n: int, width: int = 2) -> np.ndarray:
    """n rows whose values identify them: row i is filled with start + i."""
    return np.repeat(np.arange(start, start + n, dtype=np.float32)[:, None], width, axis=1)

"""Admission for node traffic, so that operators are not starved by a large fleet.

FastAPI runs plain route functions in anyio's one thread pool (40 threads). With a
thousand nodes heartbeating, every thread can be busy with node requests (which also
queue for SQLite's single writer), and an operator's request then waits behind them for
a thread, or for the GIL shared with 40 runnable threads. Node requests (heartbeats,
records, the long poll's reads) therefore run through a gate of their own: at most
``concurrency`` at a time in their own limiter, the rest waiting in line, and beyond
``max_waiting`` in line refused at once with :class:`~edgetier.errors.QueueFullError`
(HTTP 503 with ``Retry-After``), which agents treat as a missed beat and retry. The
operator routes keep the default pool, so a few threads are always free for them::

    gate = NodeGate(concurrency=8, max_waiting=256)
    reply = await gate.run(service.heartbeat, node, beat)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from edgetier.errors import QueueFullError

__all__ = ["NodeGate"]

_T = TypeVar("_T")


class NodeGate:
    """A bounded thread limiter with a bounded line (see the module)."""

    def __init__(self, *, concurrency: int, max_waiting: int, retry_after_s: float = 1.0):
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop
        self.inside = 0  # running or waiting
        self.refused = 0

    def reset(self) -> None:
        """Forget the limiter (an app's lifespan starts: a new event loop may run it)."""
        self._limiter = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        return self._limiter

    async def run(self, function: Callable[..., _T], *args: object, refuse: bool = True) -> _T:
        """``function(*args)`` in a thread of the gate; QueueFullError when the line is
        full, unless ``refuse`` is False (the rest of a request admitted already: a long
        poll woken by a change waits in line rather than failing)."""
        if refuse and self.inside >= self.concurrency + self.max_waiting:
            self.refused += 1
            raise QueueFullError(
                f"the controller is overloaded: {self.inside - self.concurrency} node "
                f"requests are waiting (limit {self.max_waiting}); retry in "
                f"{self.retry_after_s:g} s",
                retry_after_s=self.retry_after_s,
            )
        self.inside += 1
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=self.limiter)
        finally:
            self.inside -= 1

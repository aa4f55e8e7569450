"""The controller's reconcile loop: when the background passes run, and where.

Every replica runs the loop, but only the leader (:mod:`edgetier.control._leader`) runs
its passes; a follower only checks, on every tick, whether it can take the lead. A
replica that becomes leader starts with a full resync.

Operations that cannot reconcile in their own transaction (a heartbeat that reports a
node throttled, back or cooled down) add the deployments they touch to :class:`Pending`,
which wakes the loop; the loop also checks heartbeat timeouts and drives the rollouts
(their gates and batches) on every tick, runs a full resync every ``resync_s`` and
compacts telemetry every ``compact_interval_s``::

    stop = asyncio.Event()
    task = asyncio.create_task(run_loop(service, stop))    # the API's lifespan does this
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgetier.control._service import ControlService

__all__ = ["Pending", "run_loop"]

log = logging.getLogger("edgetier.control")

_MAX_BACKOFF_S = 30.0


class Pending:
    """Deployments waiting for the reconcile loop (None: all of them); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: set[str] | None = set()
        self.wake: Callable[[], None] = lambda: None

    def add(self, names: Iterable[str] | None) -> None:
        with self._lock:
            if names is None or self._names is None:
                self._names = None
            else:
                self._names.update(names)
        self.wake()

    def take(self) -> set[str] | None:
        with self._lock:
            names, self._names = self._names, set()
        return names


async def run_loop(service: ControlService, stop: asyncio.Event) -> None:
    """Pending deployments as soon as they are asked for, heartbeat timeouts, a full
    resync every ``resync_s``, telemetry compaction; until ``stop`` is set. An error in a
    pass is logged and the pass retried on the next tick (with back-off)."""
    settings = service.settings
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    service.pending.wake = lambda: _call_soon(loop, wake.set)
    tick_s = max(0.05, min(1.0, settings.node_timeout_s / 4))
    next_resync = next_compact = loop.time()
    backoff_s = tick_s
    leading = False
    while not stop.is_set():
        try:
            now = loop.time()
            was_leading, leading = leading, await asyncio.to_thread(service.leadership.poll)
            names = service.pending.take()  # a follower drops them: the leader has them
            if leading:
                if now >= next_resync or not was_leading:
                    names, next_resync = None, now + settings.resync_s
                await asyncio.to_thread(service.check_timeouts)
                if names is None or names:
                    await asyncio.to_thread(service.reconcile, names)
                await asyncio.to_thread(service.drive_rollouts)
                if now >= next_compact:
                    await asyncio.to_thread(service.compact_telemetry)
                    next_compact = now + settings.compact_interval_s
            backoff_s = tick_s
        except Exception:
            log.exception("reconcile pass failed; retrying in %.1f s", backoff_s)
            service.pending.add(None)
            backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
        wake.clear()
        waiter = asyncio.ensure_future(wake.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, timeout=backoff_s, return_when="FIRST_COMPLETED")
        waiter.cancel()
        stopper.cancel()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(callback)

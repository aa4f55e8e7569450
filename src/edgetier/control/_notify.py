"""Wake the long polls of nodes whose desired state changed.

One :class:`asyncio.Condition` per node that is waiting, created on first wait and
dropped when nobody waits on it: an unchanged fleet costs one parked request per node and
nothing else. Writers run in request threads (or the reconcile loop's), so they hand the
change to the event loop with ``call_soon_threadsafe``::

    notifier = DesiredNotifier(); notifier.bind(asyncio.get_running_loop())
    changed = await notifier.wait("edge-1", seen_generation=4, timeout_s=30)
    notifier.publish({"edge-1": 5})      # from any thread
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

__all__ = ["DesiredNotifier"]


class DesiredNotifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conditions: dict[str, asyncio.Condition] = {}
        self._waiters: dict[str, int] = {}
        self._generations: dict[str, int] = {}
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once shutting down: waits return at once."""
        return self._closed

    def parked(self) -> list[str]:
        """The nodes with a long poll parked now (callable from any thread)."""
        while True:
            try:
                return list(self._waiters)
            except RuntimeError:  # changed size while copied: the event loop runs on
                continue

    @property
    def waiting(self) -> int:
        """Long polls parked right now."""
        return sum(self._waiters.values())

    def publish(self, generations: Mapping[str, int]) -> None:
        """Nodes whose desired generation is now the given one; callable from any thread."""
        loop = self._loop
        if not generations or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
            loop.call_soon_threadsafe(self._wake, dict(generations))

    def close_threadsafe(self) -> None:
        """:meth:`close` from another thread (a signal handler, a test's thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.close)

    def close(self) -> None:
        """Release every waiter (at shutdown): each answers with what it has."""
        self._closed = True
        for condition in list(self._conditions.values()):
            asyncio.get_running_loop().create_task(self._notify(condition))

    def _wake(self, generations: dict[str, int]) -> None:
        for node, generation in generations.items():
            # generations only grow: a late message never takes a node back
            self._generations[node] = max(generation, self._generations.get(node, generation))
            condition = self._conditions.get(node)
            if condition is not None:
                asyncio.get_running_loop().create_task(self._notify(condition))

    @staticmethod
    async def _notify(condition: asyncio.Condition) -> None:
        async with condition:
            condition.notify_all()

    async def wait(self, node: str, seen_generation: int, timeout_s: float) -> bool:
        """Wait until the node's desired generation differs from ``seen_generation`` or
        ``timeout_s`` passes; True when a change was published."""
        if self._closed:
            return False
        known = self._generations.get(node)
        if known is None or known < seen_generation:
            self._generations[node] = known = seen_generation
        if known > seen_generation:
            return True
        condition = self._conditions.get(node)
        if condition is None:
            condition = self._conditions[node] = asyncio.Condition()
        self._waiters[node] = self._waiters.get(node, 0) + 1
        try:
            async with condition:
                await asyncio.wait_for(
                    condition.wait_for(
                        lambda: self._closed or self._generations.get(node) != seen_generation
                    ),
                    timeout_s,
                )
            return self._generations.get(node) != seen_generation
        except TimeoutError:
            return False
        finally:
            self._waiters[node] -= 1
            if not self._waiters[node]:
                del self._waiters[node]
                self._conditions.pop(node, None)

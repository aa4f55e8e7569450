"""``@batch``: turn a blocking batch function into an async per-request one.

The decorated function takes and returns a batch (``dict[str, np.ndarray]``, batch along
axis 0); callers await it with their own request and get their own rows back. Each
function, and each instance for a method, gets its own :class:`DynamicBatcher`, made on
the first call inside the running event loop.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, overload

from edgetier.batching._batcher import DynamicBatcher
from edgetier.batching._options import check_execute, make_options
from edgetier.batching._results import Tensors
from edgetier.errors import ConfigError

BatchFunction = Callable[..., Tensors]
"""``fn(batch) -> outputs`` or, for a method, ``fn(self, batch) -> outputs``."""


class BatchedFunction:
    """What ``@batch`` returns: ``await f(inputs)`` gives this request's outputs."""

    def __init__(self, fn: BatchFunction, options: dict[str, Any]) -> None:
        self._fn = fn
        self._options = options
        self._batcher: DynamicBatcher | None = None
        self._attr = getattr(fn, "__name__", "")
        self._label = getattr(fn, "__qualname__", self._attr)
        functools.update_wrapper(self, fn)

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> BatchedFunction: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> BatchedFunction: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> BatchedFunction:
        if instance is None:
            return self
        # bound once per instance and cached in its __dict__, which then shadows this
        # (non-data) descriptor: the instance keeps its own batcher
        bound = BatchedFunction(functools.partial(self._fn, instance), self._options)
        bound._attr = self._attr
        bound._label = self._label
        try:
            instance.__dict__[self._attr] = bound
        except AttributeError:
            raise ConfigError(
                f"@batch on method {self._attr!r} needs instances with a __dict__; "
                f"{type(instance).__name__} has __slots__ only"
            ) from None
        return bound

    @property
    def batcher(self) -> DynamicBatcher | None:
        """The batcher behind this function, once it has been called."""
        return self._batcher

    async def __call__(self, inputs: Tensors, *, priority: int = 0, timeout_us: int = 0) -> Tensors:
        batcher = self._batcher
        if batcher is None or not batcher.running or not batcher.on_running_loop():
            batcher = self._new_batcher()
        result = await batcher.submit(inputs, priority=priority, timeout_us=timeout_us)
        return result.outputs

    def _new_batcher(self) -> DynamicBatcher:
        if self._batcher is not None:
            self._batcher.abandon()  # made on an event loop that is gone
        batcher = DynamicBatcher(self._fn, name=self._label, **self._options)
        batcher._start_now()  # synchronous: concurrent first callers share this one
        self._batcher = batcher
        return batcher

    async def stop(self, *, drain: bool = True) -> None:
        """Stop the batcher (its worker threads end); the next call starts a new one."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await batcher.stop(drain=drain)


@overload
def batch(fn: BatchFunction, /) -> BatchedFunction: ...
@overload
def batch(
    fn: None = None,
    /,
    *,
    max_batch_size: int = 8,
    dynamic: bool = True,
    max_queue_delay_us: int = 0,
    preferred_batch_sizes: Sequence[int] = (),
    max_queue_size: int = 0,
    priority_levels: int = 0,
    default_priority_level: int = 0,
    default_timeout_us: int = 0,
    instance_count: int = 1,
    max_queue_wait_us: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[BatchFunction], BatchedFunction]: ...
def batch(
    fn: BatchFunction | None = None,
    /,
    *,
    max_batch_size: int = 8,
    dynamic: bool = True,
    max_queue_delay_us: int = 0,
    preferred_batch_sizes: Sequence[int] = (),
    max_queue_size: int = 0,
    priority_levels: int = 0,
    default_priority_level: int = 0,
    default_timeout_us: int = 0,
    instance_count: int = 1,
    max_queue_wait_us: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> BatchedFunction | Callable[[BatchFunction], BatchedFunction]:
    """Batch calls to a blocking function of a batch, bare (``@batch``) or with options.

    The options are those of :class:`DynamicBatcher` and are checked here, when the
    decorator is applied. Works on functions and on methods (one batcher per instance)::

        @batch(max_batch_size=16, max_queue_delay_us=1000)
        def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

        outputs = await predict({"x": np.ones((1, 4), np.float32)})
    """
    if fn is not None and not callable(fn):
        raise ConfigError(
            f"batch() takes the function or keyword options, got {fn!r}; "
            "write @batch(max_batch_size=...)"
        )
    options: dict[str, Any] = {
        "max_batch_size": max_batch_size,
        "dynamic": dynamic,
        "max_queue_delay_us": max_queue_delay_us,
        "preferred_batch_sizes": preferred_batch_sizes,
        "max_queue_size": max_queue_size,
        "priority_levels": priority_levels,
        "default_priority_level": default_priority_level,
        "default_timeout_us": default_timeout_us,
        "instance_count": instance_count,
        "max_queue_wait_us": max_queue_wait_us,
        "clock": clock,
    }
    # Check now, when the decorator is applied, not on the first request.
    checked = make_options(**{k: v for k, v in options.items() if k != "clock"})
    options["preferred_batch_sizes"] = checked.preferred_batch_sizes

    def decorate(function: BatchFunction) -> BatchedFunction:
        check_execute(function, what="@batch function")
        return BatchedFunction(function, options)

    return decorate(fn) if fn is not None else decorate

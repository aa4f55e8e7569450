"""The batcher's options, checked once when a batcher or a ``@batch`` decorator is made.

Every check raises :class:`~edgetier.errors.ConfigError` naming the option, the value and
the limit, so a bad configuration fails where it is written, not on the first request.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgetier.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BatcherOptions:
    """Validated scheduling options of one :class:`DynamicBatcher`."""

    max_batch_size: int
    dynamic: bool = True
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 0
    priority_levels: int = 0
    default_priority_level: int = 0
    default_timeout_us: int = 0
    instance_count: int = 1
    max_queue_wait_us: int = 0

    def __post_init__(self) -> None:
        _check_int("max_batch_size", self.max_batch_size, low=0)
        if not isinstance(self.dynamic, bool):
            raise ConfigError(f"dynamic must be True or False, got {self.dynamic!r}")
        _check_int("max_queue_delay_us", self.max_queue_delay_us, low=0)
        _check_int("max_queue_size", self.max_queue_size, low=0)
        _check_int("priority_levels", self.priority_levels, low=0)
        _check_int(
            "default_priority_level",
            self.default_priority_level,
            low=0,
            high=self.priority_levels,
            high_name="priority_levels",
        )
        _check_int("default_timeout_us", self.default_timeout_us, low=0)
        _check_int("instance_count", self.instance_count, low=1)
        _check_int("max_queue_wait_us", self.max_queue_wait_us, low=0)
        for i, size in enumerate(self.preferred_batch_sizes):
            _check_int(
                f"preferred_batch_sizes[{i}]",
                size,
                low=1,
                high=self.max_batch_size,
                high_name="max_batch_size",
            )

    @property
    def merges(self) -> bool:
        """Whether requests may share a batch (dynamic batching on a batching model)."""
        return self.dynamic and self.max_batch_size > 0


def make_options(
    *,
    max_batch_size: int,
    dynamic: bool,
    max_queue_delay_us: int,
    preferred_batch_sizes: Sequence[int],
    max_queue_size: int,
    priority_levels: int,
    default_priority_level: int,
    default_timeout_us: int,
    instance_count: int,
    max_queue_wait_us: int = 0,
) -> BatcherOptions:
    """Build :class:`BatcherOptions`, sorting and de-duplicating the preferred sizes."""
    if isinstance(preferred_batch_sizes, str | bytes) or not isinstance(
        preferred_batch_sizes, Sequence
    ):
        raise ConfigError(
            f"preferred_batch_sizes must be a sequence of integers, got {preferred_batch_sizes!r}"
        )
    for i, size in enumerate(preferred_batch_sizes):
        # checked before sorting so that the message can name the position the user wrote
        _check_int(
            f"preferred_batch_sizes[{i}]",
            size,
            low=1,
            high=max_batch_size if isinstance(max_batch_size, int) else None,
            high_name="max_batch_size",
        )
    return BatcherOptions(
        max_batch_size=max_batch_size,
        dynamic=dynamic,
        max_queue_delay_us=max_queue_delay_us,
        preferred_batch_sizes=tuple(sorted(set(preferred_batch_sizes))),
        max_queue_size=max_queue_size,
        priority_levels=priority_levels,
        default_priority_level=default_priority_level,
        default_timeout_us=default_timeout_us,
        instance_count=instance_count,
        max_queue_wait_us=max_queue_wait_us,
    )


def check_execute(execute: Any, *, what: str = "execute") -> None:
    """Refuse what cannot run in a worker thread: non-callables and coroutine functions."""
    if not callable(execute):
        raise ConfigError(f"{what} must be a callable, got {type(execute).__name__}")
    if inspect.iscoroutinefunction(execute) or inspect.iscoroutinefunction(
        getattr(execute, "__call__", None)  # noqa: B004 - callable objects with async __call__
    ):
        raise ConfigError(
            f"{what} must be a blocking function (it runs in worker threads), "
            f"got the coroutine function {getattr(execute, '__qualname__', execute)!r}"
        )


def _check_int(
    name: str,
    value: object,
    *,
    low: int,
    high: int | None = None,
    high_name: str = "",
) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high_name} ({high}), got {value}")

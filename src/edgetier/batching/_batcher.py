"""DynamicBatcher: one model's queue, batch formation, deadlines, priorities, back-pressure.

Scheduling is driven by events, with no task of its own: a submit and a timer on the
event loop thread, and a batch finishing on a worker thread. A worker that finishes a
batch takes the next ready one itself, so an instance never idles while the loop catches
up; the queue is therefore shared under one short lock. Futures are only touched on the
loop thread: a worker hands each finished batch back with ``call_soon_threadsafe``.
With ``inline_execute_us``, a cheap batch of an idle single-instance batcher runs on the
loop thread instead, skipping both hand-offs.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from edgetier.batching._jobs import DONE, QUEUED, TAKEN, Job, Request, ShapeKey
from edgetier.batching._options import BatcherOptions, check_execute, make_options
from edgetier.batching._results import QUEUE_WAIT_BUCKETS_US, BatcherStats, BatchResult, Tensors
from edgetier.errors import (
    ConfigError,
    EdgeTierError,
    InvalidInputError,
    QueueFullError,
    RequestTimeoutError,
    ShutdownError,
    UsageError,
)

_NEW, _RUNNING, _DRAINING, _STOPPED = "new", "running", "draining", "stopped"
_INF = float("inf")
_EWMA_ALPHA = 0.2
"""Weight of the newest batch in the service-rate estimate behind admission and
retry_after_s."""
_DEVIATIONS = 2.0
"""Batch times count at their moving average plus this many moving deviations (at most
half the average), so that the wait estimate errs long when the machine's speed varies,
as TCP's retransmit timeout does, without a few slow batches of a fast model (a worker
waiting for the GIL) inflating it many times over."""
_INLINE_AFTER = 8
"""Batches run on the worker before inline_execute_us trusts the time estimate."""


class DynamicBatcher:
    """Queues requests for one model and runs them in batches on worker threads.

    ``execute`` is a blocking function (``Engine.run``, say) that takes the batch's inputs,
    concatenated along axis 0, and returns outputs with the same number of rows; it runs
    on ``instance_count`` threads, so at most that many batches are in flight. A sequence
    of ``instance_count`` functions gives each worker thread its own (one engine each).

    A batch is sent when an instance is free and one of these holds: its rows reach a
    preferred size (the largest reachable one is sent), it reaches ``max_batch_size`` or
    cannot grow (the next request of its shape does not fit), or the oldest queued
    request has waited ``max_queue_delay_us``. Requests merge only when their inputs have
    the same names, dtypes and non-batch shapes; a request is never split. ``dynamic=False``
    runs requests one by one as sent (Triton's default scheduler), and so does a model
    without a batch dimension (``max_batch_size=0``).

    ``max_queue_wait_us`` > 0 admits a request only while its estimated wait in the queue
    (requests queued ÷ the measured service rate) fits that budget, or the request's own
    timeout when it gives one; the rest are refused at once with QueueFullError and a
    ``retry_after_s``, so that an overloaded model answers late requests with a fast
    refusal instead of a growing queue.

    ``inline_execute_us`` > 0 lets a single-instance batcher run a batch that is ready
    while its instance is idle on the event loop thread itself, once the batches' recent
    average time is under that many microseconds: for cheap models the hand-off to the
    worker thread and back costs more than the work. Off by default.

    Example::

        async with DynamicBatcher(engine.run, max_batch_size=8, max_queue_delay_us=500) as b:
            result = await b.submit({"input": image[None]})
    """

    def __init__(
        self,
        execute: Callable[[Tensors], Tensors] | Sequence[Callable[[Tensors], Tensors]],
        *,
        max_batch_size: int,
        dynamic: bool = True,
        max_queue_delay_us: int = 0,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_size: int = 0,
        priority_levels: int = 0,
        default_priority_level: int = 0,
        default_timeout_us: int = 0,
        instance_count: int = 1,
        max_queue_wait_us: int = 0,
        inline_execute_us: int = 0,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options: BatcherOptions = make_options(
            max_batch_size=max_batch_size,
            dynamic=dynamic,
            max_queue_delay_us=max_queue_delay_us,
            preferred_batch_sizes=preferred_batch_sizes,
            max_queue_size=max_queue_size,
            priority_levels=priority_levels,
            default_priority_level=default_priority_level,
            default_timeout_us=default_timeout_us,
            instance_count=instance_count,
            max_queue_wait_us=max_queue_wait_us,
        )
        self.name = name
        if inline_execute_us < 0:
            raise ConfigError(f"inline_execute_us must be >= 0, got {inline_execute_us}")
        self._executes = _per_instance(execute, instance_count)
        # with one instance, a free instance means an idle worker: its execute may run here
        self._inline_s = inline_execute_us / 1e6 if instance_count == 1 else 0.0
        self._clock = clock
        opts = self.options
        self._max_rows = opts.max_batch_size
        self._merges = opts.merges
        self._delay_s = opts.max_queue_delay_us / 1e6 if opts.merges else 0.0
        self._preferred = frozenset(opts.preferred_batch_sizes)
        # the wait budget of a request without its own timeout: the tighter of the two
        budgets = [b for b in (opts.max_queue_wait_us, opts.default_timeout_us) if b > 0]
        self._budget_us = min(budgets) if budgets else 0
        self._budget_name = (
            "max_queue_wait_us"
            if self._budget_us and self._budget_us == opts.max_queue_wait_us
            else "default_timeout_us"
        )
        # level index 0 is priority 1 (the highest); priority 0 means the default level,
        # and a default of 0 with levels configured means the lowest level
        self._levels: list[deque[Request]] = [deque() for _ in range(max(1, priority_levels))]
        self._default_level = (default_priority_level or priority_levels or 1) - 1
        self._deadlines: list[tuple[float, int, Request]] = []
        self._seq = itertools.count()
        self._depth = 0
        self._free = opts.instance_count
        self._in_flight = 0
        self._undelivered = 0  # batches sent whose results the loop has not handed out yet
        self._flushing = False
        self._wait_until = _INF
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _INF
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._work: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle: asyncio.Event | None = None
        self._stats = BatcherStats()
        self._lock = threading.Lock()
        self._ewma_batch_s = 0.0
        self._ewma_dev_s = 0.0
        self._ewma_requests = 0.0
        # the same for batches taken while more requests waited: how a queue drains
        self._full_batch_s = 0.0
        self._full_requests = 0.0
        self._batches_seen = 0

    def __repr__(self) -> str:
        return (
            f"DynamicBatcher(name={self.name!r}, state={self._state}, "
            f"max_batch_size={self._max_rows}, queue_depth={self._depth}, "
            f"in_flight={self._in_flight})"
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker threads on the running loop; a no-op when already running."""
        self._start_now()

    def _start_now(self) -> None:
        # synchronous on purpose: a caller that starts the batcher and submits at once
        # (the decorator does) never sees it half started
        if self._state == _RUNNING:
            return
        if self._state != _NEW:
            raise ShutdownError(f"batcher {self.name!r} was stopped; make a new one")
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        for i, execute in enumerate(self._executes):
            thread = threading.Thread(
                target=self._worker,
                args=(execute,),
                name=f"edgetier-batcher-{self.name or id(self)}-{i}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        self._state = _RUNNING

    async def stop(self, *, drain: bool = True) -> None:
        """Refuse new requests, then finish (drain) or fail the queued ones, and wait.

        Batches already executing always finish and deliver their results; stop()
        returns when none is left and the worker threads have ended.
        """
        if self._state == _NEW:
            self._state = _STOPPED
            return
        if self._state == _STOPPED:
            return
        with self._lock:
            self._state = _DRAINING
            self._flushing = True  # nothing more will join: no reason to wait for the delay
        if not drain:
            self._fail_queued()
        self._schedule()
        assert self._idle is not None
        if self._depth or self._undelivered:
            await self._idle.wait()
        if self._state == _STOPPED:  # a concurrent stop() finished first
            return
        self._state = _STOPPED
        self._cancel_timer()
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    async def __aenter__(self) -> DynamicBatcher:
        self._start_now()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(drain=exc is None)

    # -- public state --------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Requests waiting in the queue (not those executing)."""
        return self._depth

    @property
    def stats(self) -> BatcherStats:
        """A snapshot of the counters (see :class:`BatcherStats`)."""
        snapshot = self._stats.copy()
        snapshot.queue_depth = self._depth
        snapshot.in_flight = self._in_flight
        return snapshot

    @property
    def estimated_wait_s(self) -> float:
        """Seconds a request queued now would wait before its batch starts.

        Requests queued ÷ the recent service rate, plus one batch's time while every
        instance is busy (the batches running must end first); 0 while nothing is queued
        or before any batch has finished. The rate comes from batches taken while more
        requests waited, as a queue drains, and batch times count at their moving average
        plus two moving deviations, so the estimate errs long. Admission and
        ``retry_after_s`` use it.
        """
        rate = self._service_rate()
        return self._wait_s(rate) if self._depth and rate > 0 else 0.0

    def check_admission(self, timeout_us: int = 0) -> None:
        """Raise the QueueFullError a request with this timeout would get if submitted now
        (counted as a refused request); return when it would be admitted.

        For a caller that can refuse before it has read a large request at all.
        """
        with self._lock:
            refusal = self._admit(timeout_us) if self._state == _RUNNING else None
        if refusal is not None:
            raise self._refused(refusal)

    @property
    def running(self) -> bool:
        """Whether submit() accepts requests."""
        return self._state == _RUNNING

    def on_running_loop(self) -> bool:
        """Whether the batcher was started on the event loop running now."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def abandon(self) -> None:
        """End the worker threads of a batcher whose event loop is gone, without waiting."""
        if self._state in (_RUNNING, _DRAINING):
            self._state = _STOPPED
            for _ in self._threads:
                self._work.put(None)

    # -- submit --------------------------------------------------------------------

    async def submit(
        self, inputs: Tensors, *, priority: int = 0, timeout_us: int = 0
    ) -> BatchResult:
        """Queue one request and wait for its own rows of its batch's outputs.

        Raises InvalidInputError for a malformed request, QueueFullError at once when the
        queue is full or its estimated wait is over the budget, RequestTimeoutError when it
        waited past its timeout, ShutdownError when the batcher is stopping, and whatever
        execute() raised for its batch.
        """
        if self._state != _RUNNING:
            raise self._refused(self._not_running())
        if asyncio.get_running_loop() is not self._loop:
            raise UsageError(
                f"batcher {self.name!r} was started on another event loop; submit from the "
                "loop that started it"
            )
        request = self._make_request(inputs, priority, timeout_us)
        with self._lock:
            if (
                not self._depth
                and self._free
                and (
                    not self._delay_s
                    or request.rows >= self._max_rows
                    or request.rows in self._preferred
                )
            ):
                # the common case at low load: straight to a free instance, no timer
                request.state = TAKEN
                self._free -= 1
                self._in_flight += 1
                self._undelivered += 1
                job: Job | None = Job([request], request.rows)
            else:
                max_queue_size = self.options.max_queue_size
                if max_queue_size and self._depth >= max_queue_size:
                    raise self._refused(
                        QueueFullError(
                            f"queue of {self.name!r} is full: {self._depth} requests queued, "
                            f"max_queue_size {max_queue_size}",
                            retry_after_s=self._retry_after_s(),
                        )
                    )
                refusal = self._admit(timeout_us)
                if refusal is not None:
                    raise self._refused(refusal)
                self._enqueue(request)
                job = None
        if job is None:
            self._schedule()
        elif self._inline_now():
            self._run_inline(job)  # the future is done when this returns
        else:
            self._work.put(job)
        try:
            return await request.future
        except asyncio.CancelledError:
            with self._lock:
                gone = request.state == QUEUED
                if gone:  # the caller gave up: never run it
                    request.state = DONE
                    self._depth -= 1
            if gone:
                self._stats.failure_count += 1
                self._stats.cancelled_count += 1
                self._schedule()
            raise

    def _refused(self, error: EdgeTierError) -> EdgeTierError:
        """Count a request refused at once (never queued); return the error to raise."""
        self._stats.failure_count += 1
        self._stats.rejected_count += 1
        return error

    def _make_request(self, inputs: Tensors, priority: int, timeout_us: int) -> Request:
        if not isinstance(inputs, dict) or not inputs:
            raise InvalidInputError(
                f"inputs must be a non-empty dict of numpy arrays, got {inputs!r:.80}"
            )
        max_rows = self._max_rows
        rows = 1
        key: ShapeKey | None = None
        if max_rows:
            rows = -1
            first = ""
            parts = []
            for name, array in inputs.items():
                if not isinstance(array, np.ndarray):
                    raise InvalidInputError(
                        f"input {name!r} must be a numpy array, got {type(array).__name__}"
                    )
                shape = array.shape
                if not shape:
                    raise InvalidInputError(
                        f"input {name!r} has shape []: with max_batch_size {max_rows} "
                        "its first dimension is the batch size"
                    )
                if rows < 0:
                    rows, first = shape[0], name
                elif shape[0] != rows:
                    raise InvalidInputError(
                        f"input {name!r} has batch size {shape[0]} but input {first!r} has "
                        f"{rows}: every input of a request needs the same batch size"
                    )
                parts.append((name, array.dtype, shape[1:]))
            if rows > max_rows:
                raise InvalidInputError(
                    f"input {first!r} has batch size {rows}, over max_batch_size {max_rows}"
                    + (f" of model {self.name!r}" if self.name else "")
                )
            if rows < 1:
                raise InvalidInputError(
                    f"input {first!r} has batch size 0: a request needs at least 1 row"
                )
            key = tuple(parts) if len(parts) == 1 else tuple(sorted(parts, key=_first))
        else:
            for name, array in inputs.items():
                if not isinstance(array, np.ndarray):
                    raise InvalidInputError(
                        f"input {name!r} must be a numpy array, got {type(array).__name__}"
                    )
        levels = self.options.priority_levels
        if priority == 0:
            level = self._default_level
        elif 0 < priority <= levels:
            level = priority - 1
        elif priority > 0 and not levels:
            level = 0  # as Triton: a priority means nothing to a model without levels
        else:
            raise InvalidInputError(
                f"priority must be between 0 and priority_levels ({levels}), got {priority}"
            )
        if timeout_us < 0:
            raise InvalidInputError(f"timeout_us must be >= 0, got {timeout_us}")
        assert self._loop is not None
        return Request(
            inputs,
            rows,
            key,
            level,
            self._clock(),
            timeout_us or self.options.default_timeout_us,
            self._loop.create_future(),
        )

    def _not_running(self) -> ShutdownError:
        if self._state == _NEW:
            return ShutdownError(
                f"batcher {self.name!r} is not started; call start() or use 'async with'"
            )
        return ShutdownError(f"batcher {self.name!r} is shutting down; request refused")

    # -- scheduling: the queue is shared with the workers under self._lock ----------

    def _enqueue(self, request: Request) -> None:
        """(Under the lock) add a request to its level and, with a timeout, to the deadlines."""
        self._levels[request.level].append(request)
        self._depth += 1
        if request.deadline != _INF:
            heapq.heappush(self._deadlines, (request.deadline, next(self._seq), request))

    def _schedule(self) -> None:
        """(Loop thread) expire, dispatch what is ready, arm the timer for what must wait."""
        now = self._clock()
        with self._lock:
            expired = self._expire(now) if self._deadlines else []
            jobs = self._take_ready(now)
            when = self._wake_time()
            idle = self._state == _DRAINING and not self._depth and not self._undelivered
        inline = jobs.pop(0) if jobs and self._inline_now() else None
        for job in jobs:
            self._work.put(job)
        if expired:
            self._fail_expired(expired, now)
        self._arm_timer(now, when)
        if idle:
            assert self._idle is not None
            self._idle.set()
        if inline is not None:  # last: the state above is settled before it runs
            self._run_inline(inline)

    def _take_ready(self, now: float) -> list[Job]:
        """(Under the lock) every batch that free instances can run now."""
        self._wait_until = _INF
        jobs = []
        while self._free and self._depth:
            taken = self._take(now)
            if taken is None:
                break
            self._free -= 1
            self._in_flight += 1
            self._undelivered += 1
            job = Job(*taken)
            job.full = self._depth > 0
            jobs.append(job)
        return jobs

    def _wake_time(self) -> float:
        """(Under the lock) when the queue must be looked at again, on the batcher's clock."""
        when = _INF
        if self._depth:
            if self._free:
                when = self._wait_until
            if self._deadlines and self._deadlines[0][0] < when:
                when = self._deadlines[0][0]
        return when

    def _take(self, now: float) -> tuple[list[Request], int] | None:
        """(Under the lock) the next batch to send, marked taken; None when it must wait."""
        seed: Request | None = None
        oldest = _INF
        for level in self._levels:
            while level and level[0].state != QUEUED:
                level.popleft()
            if level:
                if seed is None:
                    seed = level[0]
                if level[0].enqueued < oldest:
                    oldest = level[0].enqueued
        if seed is None:
            return None
        batch = [seed]
        rows = seed.rows
        if self._merges:
            max_rows = self._max_rows
            preferred = self._preferred
            key = seed.key
            closed = rows >= max_rows
            preferred_n = 1 if rows in preferred else 0
            preferred_rows = rows
            if not closed:
                for level in self._levels[seed.level :]:
                    for request in level:
                        if request.state != QUEUED or request.key != key or request is seed:
                            continue
                        grown = rows + request.rows
                        if grown > max_rows:
                            closed = True  # the batch cannot grow without a split
                            break
                        batch.append(request)
                        rows = grown
                        if grown in preferred:
                            preferred_n, preferred_rows = len(batch), grown
                        if grown == max_rows:
                            closed = True
                            break
                    if closed:
                        break
            if preferred_n:
                del batch[preferred_n:]
                rows = preferred_rows
            elif not (closed or self._flushing or now >= oldest + self._delay_s):
                self._wait_until = oldest + self._delay_s
                return None
        for request in batch:
            request.state = TAKEN
        self._depth -= len(batch)
        return batch, rows

    def _expire(self, now: float) -> list[Request]:
        """(Under the lock) take the queued requests past their deadline out of the queue."""
        heap = self._deadlines
        expired = []
        while heap and (heap[0][0] <= now or heap[0][2].state != QUEUED):
            request = heapq.heappop(heap)[2]
            if request.state == QUEUED:
                request.state = DONE
                self._depth -= 1
                expired.append(request)
        return expired

    def _fail_expired(self, expired: list[Request], now: float) -> None:
        """(Loop thread) fail requests that waited past their timeout."""
        for request in expired:
            self._stats.failure_count += 1
            self._stats.timeout_count += 1
            if not request.future.done():
                waited_us = round((now - request.enqueued) * 1e6)
                request.future.set_exception(
                    RequestTimeoutError(
                        f"request to {self.name!r} waited {waited_us} us in the queue, "
                        f"over its timeout_us {request.timeout_us}"
                    )
                )

    def _fail_queued(self) -> None:
        """(Loop thread) fail every queued request with ShutdownError."""
        with self._lock:
            failed = [r for level in self._levels for r in level if r.state == QUEUED]
            for request in failed:
                request.state = DONE
            for level in self._levels:
                level.clear()
            self._deadlines.clear()
            self._depth = 0
        for request in failed:
            self._stats.failure_count += 1
            if not request.future.done():
                request.future.set_exception(
                    ShutdownError(f"batcher {self.name!r} stopped before running request")
                )

    def _arm_timer(self, now: float, when: float) -> None:
        if when == _INF:
            self._cancel_timer()
            return
        if self._timer is not None:
            if self._timer_at <= when:
                return  # an earlier wake-up will look again
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(max(0.0, when - now), self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = _INF
        self._schedule()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = _INF

    # -- completion ----------------------------------------------------------------

    def _inline_now(self) -> bool:
        """Whether a batch just taken may run on the loop thread (see inline_execute_us)."""
        return bool(
            self._inline_s
            and self._batches_seen >= _INLINE_AFTER
            and self._ewma_batch_s < self._inline_s
        )

    def _run_inline(self, job: Job) -> None:
        """(Loop thread) run a cheap batch here: no hand-off to the worker and back.

        Only with one instance, which this job holds, so the worker thread is idle. Worth
        it when execute() costs less than the two thread wake-ups a hand-off takes.
        """
        job.run(self._executes[0], self._clock, self._max_rows > 0)
        now = self._clock()
        with self._lock:
            self._free += 1
            self._in_flight -= 1
            expired = self._expire(now) if self._deadlines else []
            jobs = self._take_ready(now)
            rearm = (self._depth > 0 and self._free > 0) or self._state == _DRAINING
        for other in jobs:
            self._work.put(other)
        self._deliver(job, expired, now, rearm)

    def _worker(self, execute: Callable[[Tensors], Tensors]) -> None:
        """A worker thread: one instance of the model."""
        assert self._loop is not None
        get = self._work.get
        put = self._work.put
        call_soon = self._loop.call_soon_threadsafe
        deliver = self._deliver
        clock = self._clock
        lock = self._lock
        batched = self._max_rows > 0
        job = get()
        while job is not None:
            job.run(execute, clock, batched)
            # take the next batch here rather than wait for the loop to send one
            now = clock()
            with lock:
                self._free += 1
                self._in_flight -= 1
                expired = self._expire(now) if self._deadlines else []
                jobs = self._take_ready(now)
                # requests left waiting with an instance free: the loop arms the timer
                rearm = (self._depth > 0 and self._free > 0) or self._state == _DRAINING
            try:
                call_soon(deliver, job, expired, now, rearm)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return
            job = jobs[0] if jobs else get()
            for other in jobs[1:]:
                put(other)

    def _deliver(self, job: Job, expired: list[Request], now: float, rearm: bool) -> None:
        """(Loop thread) hand a finished batch to its callers and count it."""
        with self._lock:
            self._undelivered -= 1
        stats = self._stats
        requests = job.requests
        if job.error is None:
            compute_ns = int((job.exec_end - job.exec_start) * 1e9)
            rows = job.rows
            stats.execution_count += 1
            stats.inference_count += rows
            stats.compute_ns += compute_ns
            stats.compute_input_ns += int((job.exec_start - job.start) * 1e9)
            stats.compute_output_ns += int((job.end - job.exec_end) * 1e9)
            stats.batch_histogram[rows] = stats.batch_histogram.get(rows, 0) + 1
            stats.batch_compute_ns[rows] = stats.batch_compute_ns.get(rows, 0) + compute_ns
            start = job.start
            waits = stats.queue_wait_histogram
            for request, outputs in zip(requests, job.results, strict=True):
                request.state = DONE
                future = request.future
                if future.done():  # cancelled by its caller while executing
                    stats.failure_count += 1
                    stats.cancelled_count += 1
                    continue
                queue_ns = int((start - request.enqueued) * 1e9)
                stats.success_count += 1
                stats.queue_ns += queue_ns
                waits[bisect.bisect_left(QUEUE_WAIT_BUCKETS_US, queue_ns // 1000)] += 1
                future.set_result(BatchResult(outputs, queue_ns, compute_ns, rows))
        else:
            for request in requests:
                request.state = DONE
                stats.failure_count += 1
                if not request.future.done():
                    request.future.set_exception(job.error)
        if expired:
            self._fail_expired(expired, now)
        # service rate for retry_after_s: seconds per batch and requests per batch
        self._batches_seen += 1
        took = job.end - job.start
        a = _EWMA_ALPHA if self._ewma_batch_s else 1.0
        if self._ewma_batch_s:
            self._ewma_dev_s += a * (abs(took - self._ewma_batch_s) - self._ewma_dev_s)
        self._ewma_batch_s += a * (took - self._ewma_batch_s)
        self._ewma_requests += a * (len(requests) - self._ewma_requests)
        if job.full:
            a = _EWMA_ALPHA if self._full_batch_s else 1.0
            self._full_batch_s += a * (took - self._full_batch_s)
            self._full_requests += a * (len(requests) - self._full_requests)
        if rearm or self._state == _DRAINING:  # a timer may be needed, or stop() waits
            self._schedule()

    def _service_rate(self) -> float:
        """Requests per second the instances get through a queue; 0 before any batch.

        From the batches taken while more requests waited when there have been some (a
        queue drains in batches as large as it allows), else from all batches; batch
        times count long (see _DEVIATIONS).
        """
        batch_s, requests = self._full_batch_s, self._full_requests
        if batch_s <= 0:
            batch_s, requests = self._ewma_batch_s, self._ewma_requests
        if batch_s <= 0 or requests <= 0:
            return 0.0
        return self.options.instance_count * requests / (batch_s + self._margin_s())

    def _wait_s(self, rate: float) -> float:
        """(See estimated_wait_s) at ``rate``, the service rate (> 0)."""
        busy_s = self._ewma_batch_s + self._margin_s() if not self._free else 0.0
        return self._depth / rate + busy_s

    def _margin_s(self) -> float:
        return min(_DEVIATIONS * self._ewma_dev_s, self._ewma_batch_s / 2)

    def _retry_after_s(self) -> float:
        """Seconds until the queue ahead has been worked through, at the recent rate."""
        rate = self._service_rate()
        if rate <= 0:
            return 1.0
        return min(60.0, max(0.001, self._wait_s(rate)))

    def _admit(self, timeout_us: int) -> QueueFullError | None:
        """(Under the lock) None when a request may queue, else the refusal to raise.

        The budget is the request's own timeout when it gives one, else the tighter of
        max_queue_wait_us and default_timeout_us; no budget, or no measured rate yet,
        admits.
        """
        budget_us = timeout_us or self._budget_us
        if not budget_us or not self._depth:
            return None
        rate = self._service_rate()
        if rate <= 0:
            return None
        wait_s = self._wait_s(rate)
        budget_s = budget_us / 1e6
        if wait_s <= budget_s:
            return None
        source = "the request's timeout" if timeout_us else self._budget_name
        return QueueFullError(
            f"model {self.name!r} is overloaded: a request queued now would wait about "
            f"{wait_s * 1e3:.1f} ms ({self._depth} queued, served at {rate:.1f}/s), over "
            f"the budget of {budget_s * 1e3:g} ms ({source})",
            retry_after_s=min(60.0, max(0.001, wait_s - budget_s)),
        )


def _first(part: tuple[str, Any, Any]) -> str:
    return part[0]


def _per_instance(
    execute: Callable[[Tensors], Tensors] | Sequence[Callable[[Tensors], Tensors]],
    instance_count: int,
) -> list[Callable[[Tensors], Tensors]]:
    """One execute function per worker thread."""
    if isinstance(execute, list | tuple):
        if len(execute) != instance_count:
            raise ConfigError(
                f"execute holds {len(execute)} functions, one per instance: "
                f"it must hold instance_count ({instance_count})"
            )
        for i, fn in enumerate(execute):
            check_execute(fn, what=f"execute[{i}]")
        return list(execute)
    check_execute(execute)
    return [execute] * instance_count  # type: ignore[list-item]

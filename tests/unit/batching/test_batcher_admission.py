"""Admission by queue time: a request is refused at once when its estimated wait is over
the budget (max_queue_wait_us, default_timeout_us or its own timeout), with a retry hint."""

from __future__ import annotations

import asyncio

import pytest
from batching_helpers import FakeClock, GatedEngine, eventually, rows, settle

from edgetier.batching import BatcherStats, DynamicBatcher
from edgetier.errors import ConfigError, QueueFullError


async def occupied(batcher: DynamicBatcher, engine: GatedEngine) -> asyncio.Task:
    """Hold the instance busy with one request."""
    engine.hold()
    task = asyncio.create_task(batcher.submit({"x": rows(-100, 1)}))
    await eventually(lambda: engine.running == 1)
    return task


async def measured(batcher: DynamicBatcher, engine: GatedEngine) -> asyncio.Task:
    """Run one batch (the rate becomes known), then hold the instance busy."""
    await batcher.submit({"x": rows(0, 1)})  # 1 request in 0.1 s of the fake clock: 10/s
    return await occupied(batcher, engine)


def queue(batcher: DynamicBatcher, ids: range, **options: int) -> list[asyncio.Task]:
    return [asyncio.create_task(batcher.submit({"x": rows(i, 1)}, **options)) for i in ids]


async def test_requests_past_the_budget_are_refused_at_once(clock: FakeClock) -> None:
    engine = GatedEngine(clock=clock, compute_s=0.1)
    async with DynamicBatcher(
        engine, max_batch_size=1, max_queue_wait_us=250_000, clock=clock, name="m"
    ) as b:
        first = await measured(b, engine)
        # the batch running ends first (0.1 s), then each queued request takes 0.1 s
        admitted = queue(b, range(1, 3))  # the first finds the queue empty; then 0.2 s
        await settle()
        assert b.queue_depth == 2
        assert b.estimated_wait_s == pytest.approx(0.3)
        with pytest.raises(QueueFullError, match="max_queue_wait_us") as refused:
            await b.submit({"x": rows(9, 1)})  # would wait 0.3 s
        message = refused.value.message
        assert "'m' is overloaded" in message and "2 queued" in message and "250 ms" in message
        assert refused.value.retry_after_s == pytest.approx(0.05)  # 0.3 s - 0.25 s
        assert b.queue_depth == 2  # the refused request never queued
        engine.release()
        await asyncio.gather(first, *admitted)
        assert b.stats.rejected_count == 1 and b.stats.failure_count == 1
    assert 9 not in [int(v) for batch in engine.batches for v in batch["x"][:, 0]]


async def test_a_request_s_own_timeout_is_its_budget(clock: FakeClock) -> None:
    engine = GatedEngine(clock=clock, compute_s=0.1)
    async with DynamicBatcher(engine, max_batch_size=1, max_queue_wait_us=50_000, clock=clock) as b:
        first = await measured(b, engine)
        waiting = queue(b, range(1, 3), timeout_us=10_000_000)  # fine for 10 s
        await settle()
        assert b.queue_depth == 2
        patient = queue(b, range(3, 4), timeout_us=500_000)  # 0.3 s within its 0.5 s
        await settle()
        assert b.queue_depth == 3
        with pytest.raises(QueueFullError, match="the request's timeout"):
            await b.submit({"x": rows(5, 1)}, timeout_us=200_000)  # 0.4 s over its 0.2 s
        with pytest.raises(QueueFullError, match="max_queue_wait_us"):
            await b.submit({"x": rows(6, 1)})  # no timeout: the model's 50 ms budget
        engine.release()
        await asyncio.gather(first, *waiting, *patient)


async def test_the_default_timeout_is_the_budget_when_tighter(clock: FakeClock) -> None:
    engine = GatedEngine(clock=clock, compute_s=0.1)
    async with DynamicBatcher(
        engine,
        max_batch_size=1,
        max_queue_wait_us=5_000_000,
        default_timeout_us=150_000,
        clock=clock,
    ) as b:
        first = await measured(b, engine)
        waiting = queue(b, range(1, 3), timeout_us=10_000_000)  # their own, longer timeout
        await settle()
        with pytest.raises(QueueFullError, match="default_timeout_us"):
            await b.submit({"x": rows(5, 1)})  # 0.3 s: it would time out in the queue
        engine.release()
        await asyncio.gather(first, *waiting)


async def test_without_a_measured_rate_or_a_budget_requests_queue(clock: FakeClock) -> None:
    engine = GatedEngine(clock=clock, compute_s=0.1)
    async with DynamicBatcher(engine, max_batch_size=1, max_queue_wait_us=1, clock=clock) as b:
        engine.hold()  # no batch has finished: the rate is unknown, nothing is refused
        tasks = queue(b, range(0, 5))
        await settle()
        assert b.estimated_wait_s == 0.0
        engine.release()
        await asyncio.gather(*tasks)
    engine = GatedEngine(clock=clock, compute_s=0.1)
    async with DynamicBatcher(engine, max_batch_size=1, clock=clock) as b:  # no budget
        first = await measured(b, engine)
        tasks = queue(b, range(1, 50))
        await settle()
        assert b.queue_depth == 49 and b.estimated_wait_s == pytest.approx(5.0)
        engine.release()
        await asyncio.gather(first, *tasks)
        assert b.stats.rejected_count == 0


async def test_the_rate_comes_from_batches_as_large_as_the_queue_allowed(
    clock: FakeClock,
) -> None:
    engine = GatedEngine(clock=clock, compute_s=0.1)
    async with DynamicBatcher(engine, max_batch_size=4, clock=clock) as b:
        await b.submit({"x": rows(0, 1)})  # a batch of 1 in 0.1 s: 10/s if it were all
        first = await occupied(b, engine)
        queued = queue(b, range(1, 9))  # 8 wait: a batch of 4 with 4 more behind it
        await settle()
        engine.release()
        await asyncio.gather(first, *queued)
        assert engine.sizes[-2:] == [4, 4]
        held = await occupied(b, engine)
        more = queue(b, range(10, 18))
        await settle()
        # the queue drains 4 requests per 0.1 s (not 1): 8 queued wait 0.2 s, after the
        # batch running (0.1 s)
        assert b.estimated_wait_s == pytest.approx(0.3)
        engine.release()
        await asyncio.gather(held, *more)


@pytest.mark.parametrize(
    ("second_s", "counted_s"),
    [
        (0.2, 0.12 + 2 * 0.02),  # average 0.12 s plus two deviations of 0.02 s
        (2.0, 0.48 + 0.24),  # deviation 0.38 s: the margin stops at half the average
    ],
)
async def test_batch_times_that_vary_make_the_estimate_longer(
    clock: FakeClock, second_s: float, counted_s: float
) -> None:
    engine = GatedEngine(clock=clock, compute_s=0.1)
    async with DynamicBatcher(engine, max_batch_size=1, clock=clock) as b:
        await b.submit({"x": rows(0, 1)})  # 0.1 s
        engine.compute_s = second_s
        await b.submit({"x": rows(1, 1)})
        first = await occupied(b, engine)
        queued = queue(b, range(2, 4))
        await settle()
        # the batch running and the two queued each count counted_s
        assert b.estimated_wait_s == pytest.approx(3 * counted_s)
        engine.release()
        await asyncio.gather(first, *queued)


async def test_queue_waits_are_counted_in_buckets(clock: FakeClock) -> None:
    engine = GatedEngine()
    async with DynamicBatcher(engine, max_batch_size=1, clock=clock) as b:
        await b.submit({"x": rows(0, 1)})  # straight to the idle instance: waits 0
        engine.hold()
        first = asyncio.create_task(b.submit({"x": rows(1, 1)}))
        await eventually(lambda: engine.running == 1)
        second = asyncio.create_task(b.submit({"x": rows(2, 1)}))
        await settle()
        clock.advance(0.003)  # the queued request waits 3 ms
        engine.release()
        await asyncio.gather(first, second)
    histogram = b.stats.queue_wait_histogram
    bounds = BatcherStats.QUEUE_WAIT_BUCKETS_US
    assert len(histogram) == len(bounds) + 1 and sum(histogram) == 3
    assert histogram[0] == 2  # two requests that did not wait
    assert histogram[bounds.index(5_000)] == 1  # 3 ms: in (2.5 ms, 5 ms]


def test_a_negative_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_queue_wait_us must be >= 0, got -1"):
        DynamicBatcher(GatedEngine(), max_batch_size=1, max_queue_wait_us=-1)

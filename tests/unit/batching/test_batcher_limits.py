"""Timeouts, back-pressure, instances, failures, shutdown, the non-dynamic modes and stats."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from batching_helpers import FakeClock, GatedEngine, eventually, rows, settle

from edgetier.batching import DynamicBatcher
from edgetier.errors import (
    ConfigError,
    EdgeTierError,
    QueueFullError,
    RequestTimeoutError,
    ShutdownError,
)


async def occupy(batcher: DynamicBatcher, engine: GatedEngine) -> asyncio.Task:
    engine.hold()
    task = asyncio.create_task(batcher.submit({"x": rows(-100, 1)}))
    await eventually(lambda: engine.running == 1)
    return task


def ran_ids(engine: GatedEngine) -> list[int]:
    return [int(v) for batch in engine.batches for v in batch["x"][:, 0]]


async def test_a_request_past_its_timeout_fails_and_never_runs(clock: FakeClock) -> None:
    engine = GatedEngine()
    async with DynamicBatcher(engine, max_batch_size=4, clock=clock) as b:
        first = await occupy(b, engine)
        doomed = asyncio.create_task(b.submit({"x": rows(1, 1)}, timeout_us=1_000))
        patient = asyncio.create_task(b.submit({"x": rows(2, 1)}, timeout_us=10_000))
        await settle()
        clock.advance(0.002)
        with pytest.raises(RequestTimeoutError, match="timeout_us 1000"):
            await asyncio.wait_for(doomed, 5)  # expires while the instance is still busy
        assert b.queue_depth == 1
        engine.release()
        await asyncio.wait_for(asyncio.gather(first, patient), 5)
        assert 1 not in ran_ids(engine) and 2 in ran_ids(engine)
        assert b.stats.timeout_count == 1
        assert b.stats.failure_count == 1
        assert b.stats.success_count == 2


async def test_default_timeout_applies_when_a_request_sets_none(clock: FakeClock) -> None:
    engine = GatedEngine()
    async with DynamicBatcher(engine, max_batch_size=4, default_timeout_us=500, clock=clock) as b:
        first = await occupy(b, engine)
        doomed = asyncio.create_task(b.submit({"x": rows(1, 1)}))
        await settle()
        clock.advance(0.001)
        with pytest.raises(RequestTimeoutError, match="timeout_us 500"):
            await asyncio.wait_for(doomed, 5)
        engine.release()
        await first
    assert 1 not in ran_ids(engine)


async def test_a_full_queue_refuses_at_once_with_retry_after(clock: FakeClock) -> None:
    engine = GatedEngine(clock=clock, compute_s=0.1)
    async with DynamicBatcher(engine, max_batch_size=1, max_queue_size=2, clock=clock) as b:
        await b.submit({"x": rows(0, 1)})  # one batch of 1 request in 0.1 s: 10 requests/s
        first = await occupy(b, engine)
        queued = [asyncio.create_task(b.submit({"x": rows(i, 1)})) for i in (1, 2)]
        await settle()
        assert b.queue_depth == 2
        with pytest.raises(QueueFullError, match="max_queue_size 2") as refused:
            await b.submit({"x": rows(3, 1)})
        # the batch running, then two queued requests, at the measured 10 requests per second
        assert refused.value.retry_after_s == pytest.approx(0.3)
        assert b.queue_depth == 2  # the queue did not grow
        engine.release()
        await asyncio.gather(first, *queued)
        assert b.stats.rejected_count == 1
    assert 3 not in ran_ids(engine)


async def test_instances_run_batches_in_parallel_and_no_more() -> None:
    both_running = threading.Barrier(2, timeout=5)
    engine = GatedEngine()

    def transform(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if int(inputs["x"][0, 0]) < 2:
            both_running.wait()  # only passes if two batches run at the same time
        return {"y": inputs["x"] * 10}

    engine.transform = transform
    async with DynamicBatcher(engine, max_batch_size=1, instance_count=2) as b:
        results = await asyncio.wait_for(
            asyncio.gather(*(b.submit({"x": rows(i, 1)}) for i in range(6))), 5
        )
    assert len(results) == 6
    assert engine.max_running == 2


async def test_an_execute_error_reaches_every_caller_of_the_batch(engine: GatedEngine) -> None:
    async with DynamicBatcher(engine, max_batch_size=8) as b:
        first = await occupy(b, engine)
        tasks = [asyncio.create_task(b.submit({"x": rows(i, 1)})) for i in range(3)]
        await settle()
        engine.error = ValueError("engine exploded")
        engine.release()
        outcomes = await asyncio.gather(first, *tasks, return_exceptions=True)
        assert all(isinstance(o, ValueError) and "exploded" in str(o) for o in outcomes)
        assert b.stats.failure_count == 4
        engine.error = None
        ok = await b.submit({"x": rows(7, 1)})  # the batcher goes on serving
        np.testing.assert_array_equal(ok.outputs["y"], rows(7, 1) * 10)


async def test_wrong_output_rows_name_both_counts_and_the_output(engine: GatedEngine) -> None:
    engine.transform = lambda inputs: {"y": inputs["x"] * 10, "extra": np.zeros(5)}
    async with DynamicBatcher(engine, max_batch_size=8) as b:
        first = await occupy(b, engine)
        tasks = [asyncio.create_task(b.submit({"x": rows(i, 1)})) for i in range(3)]
        await settle()
        engine.release()
        outcomes = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert isinstance(outcomes[0], EdgeTierError)
    assert "5 rows for output 'extra', expected 1" in str(outcomes[0])
    for outcome in outcomes[1:]:
        assert isinstance(outcome, EdgeTierError)
        assert "5 rows for output 'extra', expected 3" in str(outcome)


async def test_outputs_that_are_not_a_dict_are_an_error(engine: GatedEngine) -> None:
    engine.transform = lambda inputs: [inputs["x"]]
    async with DynamicBatcher(engine, max_batch_size=8) as b:
        with pytest.raises(EdgeTierError, match="dict of numpy arrays, got list"):
            await b.submit({"x": rows(0, 1)})


async def test_stop_with_drain_finishes_the_queue_and_refuses_new_requests(
    clock: FakeClock,
) -> None:
    engine = GatedEngine()
    b = DynamicBatcher(engine, max_batch_size=2, max_queue_delay_us=10**9, clock=clock)
    await b.start()
    engine.hold()
    first = asyncio.create_task(b.submit({"x": rows(0, 2)}))
    await eventually(lambda: engine.running == 1)
    queued = [asyncio.create_task(b.submit({"x": rows(i, 1)})) for i in (1, 2, 3)]
    await settle()
    stopping = asyncio.create_task(b.stop(drain=True))
    await settle()
    with pytest.raises(ShutdownError, match="shutting down"):
        await b.submit({"x": rows(9, 1)})
    engine.release()
    await asyncio.wait_for(stopping, 5)  # the delay is not waited for: nothing can join
    results = await asyncio.gather(first, *queued)
    assert [r.outputs["y"][0, 0] for r in results[1:]] == [10, 20, 30]
    assert b.queue_depth == 0 and not b.running


async def test_stop_without_drain_fails_the_queue_and_finishes_running_batches(
    engine: GatedEngine,
) -> None:
    b = DynamicBatcher(engine, max_batch_size=4)
    await b.start()
    first = await occupy(b, engine)
    queued = [asyncio.create_task(b.submit({"x": rows(i, 1)})) for i in range(3)]
    await settle()
    stopping = asyncio.create_task(b.stop(drain=False))
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(o, ShutdownError) for o in outcomes)
    assert not stopping.done()  # waits for the running batch
    engine.release()
    await asyncio.wait_for(stopping, 5)
    assert (await first).outputs["y"][0, 0] == -1000
    assert ran_ids(engine) == [-100]


async def test_submit_before_start_is_refused(engine: GatedEngine) -> None:
    b = DynamicBatcher(engine, max_batch_size=4)
    with pytest.raises(ShutdownError, match="not started"):
        await b.submit({"x": rows(0, 1)})
    await b.stop()
    with pytest.raises(ShutdownError, match="was stopped"):
        await b.start()


async def test_a_cancelled_caller_leaves_the_queue_and_never_runs(engine: GatedEngine) -> None:
    async with DynamicBatcher(engine, max_batch_size=4) as b:
        first = await occupy(b, engine)
        gone = asyncio.create_task(b.submit({"x": rows(1, 1)}))
        kept = asyncio.create_task(b.submit({"x": rows(2, 1)}))
        await settle()
        gone.cancel()
        await settle()
        assert b.queue_depth == 1
        engine.release()
        await asyncio.gather(first, kept)
        assert b.stats.cancelled_count == 1
    assert ran_ids(engine) == [-100, 2]


async def test_dynamic_false_runs_requests_one_by_one_as_sent(engine: GatedEngine) -> None:
    async with DynamicBatcher(
        engine, max_batch_size=8, dynamic=False, max_queue_size=3, instance_count=1
    ) as b:
        first = await occupy(b, engine)
        tasks = [asyncio.create_task(b.submit({"x": rows(10 * i, i + 1)})) for i in range(3)]
        await settle()
        with pytest.raises(QueueFullError):
            await b.submit({"x": rows(0, 1)})
        engine.release()
        results = await asyncio.gather(first, *tasks)
    assert engine.sizes == [1, 1, 2, 3]
    for i, result in enumerate(results[1:]):
        assert result.batch_size == i + 1
        np.testing.assert_array_equal(result.outputs["y"], rows(10 * i, i + 1) * 10)


async def test_max_batch_size_zero_runs_each_request_alone_without_batch_dim(
    engine: GatedEngine,
) -> None:
    async with DynamicBatcher(engine, max_batch_size=0) as b:
        engine.hold()
        first = asyncio.create_task(b.submit({"x": np.arange(3.0)}))
        await eventually(lambda: engine.running == 1)
        tasks = [asyncio.create_task(b.submit({"x": np.full(5, float(i))})) for i in range(3)]
        await settle()
        engine.release()
        results = await asyncio.gather(first, *tasks)
        stats = b.stats
    assert [batch["x"].shape for batch in engine.batches] == [(3,), (5,), (5,), (5,)]
    np.testing.assert_array_equal(results[2].outputs["y"], np.full(5, 10.0))
    assert [r.batch_size for r in results] == [1, 1, 1, 1]
    assert stats.batch_histogram == {1: 4}
    assert stats.inference_count == 4


async def test_stats_count_rows_batches_and_durations(clock: FakeClock) -> None:
    engine = GatedEngine(clock=clock, compute_s=0.25)
    async with DynamicBatcher(engine, max_batch_size=4, clock=clock) as b:
        engine.hold()
        first = asyncio.create_task(b.submit({"x": rows(0, 1)}))
        await eventually(lambda: engine.running == 1)
        tasks = [asyncio.create_task(b.submit({"x": rows(i, 2)})) for i in range(3)]
        await settle()
        engine.release()
        results = await asyncio.gather(first, *tasks)
        stats = b.stats
    # batches: [1], [2+2], [2]; each execute() takes 0.25 s of the fake clock
    assert stats.success_count == 4 and stats.failure_count == 0
    assert stats.inference_count == 7
    assert stats.execution_count == 3
    assert stats.batch_histogram == {1: 1, 4: 1, 2: 1}
    assert stats.compute_ns == pytest.approx(750_000_000, abs=1_000)
    assert stats.batch_compute_ns[4] == pytest.approx(250_000_000, abs=1_000)
    assert [r.compute_ns for r in results] == pytest.approx([250_000_000] * 4, abs=1_000)
    # queued at t=0: the 2nd batch starts at 0.25 s, the 3rd at 0.5 s
    assert [r.queue_ns for r in results] == pytest.approx(
        [0, 250_000_000, 250_000_000, 500_000_000], abs=1_000
    )
    assert stats.queue_ns == pytest.approx(1_000_000_000, abs=4_000)
    assert stats.queue_depth == 0 and stats.in_flight == 0


async def test_stats_are_a_snapshot(engine: GatedEngine) -> None:
    async with DynamicBatcher(engine, max_batch_size=4) as b:
        before = b.stats
        await b.submit({"x": rows(0, 2)})
        assert before.execution_count == 0 and before.batch_histogram == {}
        assert b.stats.batch_histogram == {2: 1}


async def test_each_instance_can_have_its_own_execute() -> None:
    both_running = threading.Barrier(2, timeout=5)
    used: list[str] = []

    def engine_of(tag: str) -> GatedEngine:
        engine = GatedEngine()

        def transform(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            used.append(tag)
            both_running.wait()  # two batches at once: one on each engine
            return {"y": inputs["x"] * 10}

        engine.transform = transform
        return engine

    engines = [engine_of("a"), engine_of("b")]
    async with DynamicBatcher(engines, max_batch_size=1, instance_count=2) as b:
        await asyncio.wait_for(asyncio.gather(*(b.submit({"x": rows(i, 1)}) for i in range(2))), 5)
    assert sorted(used) == ["a", "b"]


def test_one_execute_per_instance_or_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"execute holds 1 functions.*instance_count \(2\)"):
        DynamicBatcher([GatedEngine()], max_batch_size=1, instance_count=2)

"""How batches form: max and preferred sizes, the queue delay, merge and split, priorities."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from batching_helpers import FakeClock, GatedEngine, eventually, rows, settle

from edgetier.batching import DynamicBatcher


async def occupy(batcher: DynamicBatcher, engine: GatedEngine, n: int = 1) -> asyncio.Task:
    """Hold the only instance with one running request so that later ones queue."""
    engine.hold()
    task = asyncio.create_task(batcher.submit({"x": rows(-100, n)}))
    await eventually(lambda: engine.running == 1)
    return task


async def test_batches_fill_up_to_max_batch_size(engine: GatedEngine) -> None:
    async with DynamicBatcher(engine, max_batch_size=4) as b:
        first = await occupy(b, engine)
        tasks = [asyncio.create_task(b.submit({"x": rows(i, 1)})) for i in range(9)]
        await settle()
        assert b.queue_depth == 9
        engine.release()
        results = await asyncio.gather(first, *tasks)
    assert engine.sizes == [1, 4, 4, 1]
    assert [r.batch_size for r in results[1:]] == [4] * 8 + [1]
    for i, result in enumerate(results[1:]):
        np.testing.assert_array_equal(result.outputs["y"], rows(i, 1) * 10)


async def test_a_preferred_size_is_sent_at_once_without_waiting(clock: FakeClock) -> None:
    engine = GatedEngine()
    async with DynamicBatcher(
        engine,
        max_batch_size=8,
        preferred_batch_sizes=[2, 4],
        max_queue_delay_us=10_000_000,  # never reached: the fake clock does not move
        clock=clock,
    ) as b:
        one = asyncio.create_task(b.submit({"x": rows(0, 1)}))
        await settle()
        assert b.queue_depth == 1 and engine.sizes == []
        two = asyncio.create_task(b.submit({"x": rows(1, 1)}))
        await asyncio.wait_for(asyncio.gather(one, two), 5)
        assert engine.sizes == [2]
        # a request that alone is a preferred size goes straight away too
        alone = await asyncio.wait_for(b.submit({"x": rows(5, 4)}), 5)
        assert alone.batch_size == 4


async def test_the_largest_reachable_preferred_size_is_chosen(clock: FakeClock) -> None:
    engine = GatedEngine()
    async with DynamicBatcher(
        engine,
        max_batch_size=8,
        preferred_batch_sizes=[2, 4],
        max_queue_delay_us=50_000,
        clock=clock,
    ) as b:
        first = await occupy(b, engine, 2)  # a preferred size: sent at once
        tasks = [asyncio.create_task(b.submit({"x": rows(i, 1)})) for i in range(7)]
        await settle()
        engine.release()
        await eventually(lambda: len(engine.batches) == 3)
        await settle()
        # 7 queued: 4 (largest preferred), then 2, and the last one waits for the delay
        assert engine.sizes == [2, 4, 2]
        assert b.queue_depth == 1
        clock.advance(0.05)
        await asyncio.wait_for(asyncio.gather(first, *tasks), 5)
    assert engine.sizes == [2, 4, 2, 1]


async def test_queue_delay_is_measured_on_the_injected_clock(clock: FakeClock) -> None:
    engine = GatedEngine()
    async with DynamicBatcher(
        engine, max_batch_size=4, max_queue_delay_us=20_000, clock=clock
    ) as b:
        task = asyncio.create_task(b.submit({"x": rows(0, 1)}))
        await asyncio.sleep(0.05)  # longer than the delay in real time: must not matter
        assert engine.batches == [] and b.queue_depth == 1
        clock.advance(0.019)
        await asyncio.sleep(0.05)
        assert engine.batches == []
        late = asyncio.create_task(b.submit({"x": rows(1, 1)}))  # joins within the delay
        await settle()
        clock.advance(0.001)
        first, second = await asyncio.wait_for(asyncio.gather(task, late), 5)
    assert engine.sizes == [2]
    assert first.batch_size == second.batch_size == 2
    assert first.queue_ns == pytest.approx(20_000_000, abs=1_000)
    assert second.queue_ns == pytest.approx(1_000_000, abs=1_000)


async def test_a_full_batch_does_not_wait_for_the_delay(clock: FakeClock) -> None:
    engine = GatedEngine()
    async with DynamicBatcher(engine, max_batch_size=3, max_queue_delay_us=10**9, clock=clock) as b:
        results = await asyncio.wait_for(
            asyncio.gather(*(b.submit({"x": rows(i, 1)}) for i in range(3))), 5
        )
    assert engine.sizes == [3]
    assert [r.queue_ns for r in results] == [0, 0, 0]


async def test_multi_row_requests_merge_and_split_back(engine: GatedEngine) -> None:
    sizes = [3, 1, 2, 2]
    async with DynamicBatcher(engine, max_batch_size=8) as b:
        first = await occupy(b, engine)
        starts = np.cumsum([0, *sizes])[:-1] * 100
        tasks = [
            asyncio.create_task(b.submit({"x": rows(int(s), n)}))
            for s, n in zip(starts, sizes, strict=True)
        ]
        await settle()
        engine.release()
        results = await asyncio.gather(*tasks)
        await first
    assert engine.sizes == [1, 8]
    for s, n, result in zip(starts, sizes, results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], rows(int(s), n) * 10)
        assert result.batch_size == 8


async def test_a_request_is_never_split_across_batches(engine: GatedEngine) -> None:
    async with DynamicBatcher(engine, max_batch_size=4) as b:
        first = await occupy(b, engine)
        tasks = [asyncio.create_task(b.submit({"x": rows(10 * i, 3)})) for i in range(3)]
        await settle()
        engine.release()
        results = await asyncio.gather(first, *tasks)
    assert engine.sizes == [1, 3, 3, 3]
    assert all(size <= 4 for size in engine.sizes)
    for i, result in enumerate(results[1:]):
        np.testing.assert_array_equal(result.outputs["y"], rows(10 * i, 3) * 10)


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param({"x": np.zeros((1, 3), np.float32)}, id="other-shape"),
        pytest.param({"x": np.zeros((1, 2), np.float64)}, id="other-dtype"),
    ],
)
async def test_only_matching_shapes_and_dtypes_merge(
    engine: GatedEngine, odd: dict[str, np.ndarray]
) -> None:
    async with DynamicBatcher(engine, max_batch_size=8) as b:
        first = await occupy(b, engine)
        a = asyncio.create_task(b.submit({"x": rows(1, 1)}))
        mismatched = asyncio.create_task(b.submit(odd))
        c = asyncio.create_task(b.submit({"x": rows(2, 2)}))
        await settle()
        engine.release()
        ra, rodd, rc = await asyncio.gather(a, mismatched, c)
        await first
    # a and c share a batch; the odd one is not starved: it runs right after
    assert engine.sizes == [1, 3, 1]
    assert engine.batches[2]["x"].shape == odd["x"].shape
    assert engine.batches[2]["x"].dtype == odd["x"].dtype
    assert (ra.batch_size, rodd.batch_size, rc.batch_size) == (3, 1, 3)
    np.testing.assert_array_equal(rc.outputs["y"], rows(2, 2) * 10)
    assert rodd.outputs["y"].shape == odd["x"].shape


async def test_inputs_merge_by_name_whatever_their_order(engine: GatedEngine) -> None:
    engine.transform = lambda inputs: {"y": inputs["x"] * 10, "z": inputs.get("w", inputs["x"]) + 1}
    async with DynamicBatcher(engine, max_batch_size=8) as b:
        first = await occupy(b, engine)
        p = asyncio.create_task(b.submit({"x": rows(1, 1), "w": np.full((1, 1), 5)}))
        q = asyncio.create_task(b.submit({"w": np.full((2, 1), 7), "x": rows(2, 2)}))
        await settle()
        engine.release()
        rp, rq = await asyncio.gather(p, q)
        await first
    assert engine.sizes == [1, 3]
    np.testing.assert_array_equal(rq.outputs["z"], np.full((2, 1), 8))
    np.testing.assert_array_equal(rp.outputs["y"], rows(1, 1) * 10)


async def test_higher_priority_first_and_fifo_within_a_level(engine: GatedEngine) -> None:
    async with DynamicBatcher(
        engine, max_batch_size=1, priority_levels=3, default_priority_level=2
    ) as b:
        first = await occupy(b, engine)
        order = [(3, 0), (1, 1), (2, 2), (1, 3), (0, 4), (3, 5)]  # (priority, id)
        tasks = [asyncio.create_task(b.submit({"x": rows(i, 1)}, priority=p)) for p, i in order]
        await settle()
        engine.release()
        await asyncio.gather(first, *tasks)
    ran = [int(batch["x"][0, 0]) for batch in engine.batches[1:]]
    # priority 1: ids 1, 3; level 2 (priority 2 and the default 0): 2, 4; priority 3: 0, 5
    assert ran == [1, 3, 2, 4, 0, 5]


async def test_priorities_pick_the_batch_and_fill_it_from_lower_levels(
    engine: GatedEngine,
) -> None:
    async with DynamicBatcher(engine, max_batch_size=3, priority_levels=2) as b:
        first = await occupy(b, engine)
        low = [asyncio.create_task(b.submit({"x": rows(i, 1)}, priority=2)) for i in range(3)]
        high = asyncio.create_task(b.submit({"x": rows(9, 1)}, priority=1))
        await settle()
        engine.release()
        await asyncio.gather(first, high, *low)
    assert [batch["x"][:, 0].tolist() for batch in engine.batches[1:]] == [[9, 0, 1], [2]]


async def test_without_priority_levels_a_priority_is_ignored(engine: GatedEngine) -> None:
    async with DynamicBatcher(engine, max_batch_size=1) as b:
        first = await occupy(b, engine)
        tasks = [asyncio.create_task(b.submit({"x": rows(i, 1)}, priority=5 - i)) for i in range(3)]
        await settle()
        engine.release()
        await asyncio.gather(first, *tasks)
    assert [int(batch["x"][0, 0]) for batch in engine.batches[1:]] == [0, 1, 2]

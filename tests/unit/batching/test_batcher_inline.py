"""inline_execute_us: cheap batches run on the event loop thread, costly ones on the worker."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from batching_helpers import FakeClock, GatedEngine, rows

from edgetier.batching import DynamicBatcher
from edgetier.errors import ConfigError


class ThreadRecorder(GatedEngine):
    """GatedEngine that also records the thread each batch ran on."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.threads: list[threading.Thread] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> object:
        self.threads.append(threading.current_thread())
        return super().__call__(inputs)


async def _run(batcher: DynamicBatcher, n: int) -> list[np.ndarray]:
    outputs = []
    for i in range(n):
        result = await batcher.submit({"x": rows(i, 1)})
        outputs.append(result.outputs["y"])
    return outputs


async def test_cheap_batches_run_on_the_loop_thread_once_their_cost_is_known(
    clock: FakeClock,
) -> None:
    engine = ThreadRecorder()  # the fake clock never moves: every batch costs 0 s
    async with DynamicBatcher(
        engine, max_batch_size=4, inline_execute_us=200, clock=clock
    ) as batcher:
        outputs = await _run(batcher, 20)
        stats = batcher.stats
    loop_thread = threading.current_thread()
    assert all(t is not loop_thread for t in engine.threads[:8])  # measured on the worker
    assert all(t is loop_thread for t in engine.threads[8:])
    for i, y in enumerate(outputs):
        np.testing.assert_array_equal(y, rows(i, 1) * 10)
    assert stats.success_count == stats.execution_count == 20
    assert stats.in_flight == 0 and stats.queue_depth == 0


async def test_costly_batches_stay_on_the_worker(clock: FakeClock) -> None:
    engine = ThreadRecorder(clock=clock, compute_s=0.001)  # 1000 us each, over 200 us
    async with DynamicBatcher(
        engine, max_batch_size=4, inline_execute_us=200, clock=clock
    ) as batcher:
        await _run(batcher, 12)
    loop_thread = threading.current_thread()
    assert engine.threads and all(t is not loop_thread for t in engine.threads)


@pytest.mark.parametrize("options", [{"inline_execute_us": 0}, {"instance_count": 2}])
async def test_inline_is_off_by_default_and_with_several_instances(
    clock: FakeClock, options: dict[str, int]
) -> None:
    engine = ThreadRecorder()
    kwargs = {"inline_execute_us": 200, **options}
    async with DynamicBatcher(engine, max_batch_size=4, clock=clock, **kwargs) as batcher:
        await _run(batcher, 12)
    loop_thread = threading.current_thread()
    assert all(t is not loop_thread for t in engine.threads)


async def test_an_inline_error_reaches_the_caller_and_the_batcher_goes_on(
    clock: FakeClock,
) -> None:
    engine = ThreadRecorder()
    async with DynamicBatcher(
        engine, max_batch_size=4, inline_execute_us=200, clock=clock
    ) as batcher:
        await _run(batcher, 8)
        engine.error = ValueError("bad batch")
        with pytest.raises(ValueError, match="bad batch"):
            await batcher.submit({"x": rows(0, 1)})
        engine.error = None
        result = await batcher.submit({"x": rows(5, 1)})
        np.testing.assert_array_equal(result.outputs["y"], rows(5, 1) * 10)
        assert engine.threads[-1] is threading.current_thread()
        assert batcher.stats.failure_count == 1


def test_negative_inline_execute_us_is_refused() -> None:
    with pytest.raises(ConfigError, match="inline_execute_us must be >= 0, got -1"):
        DynamicBatcher(GatedEngine(), max_batch_size=4, inline_execute_us=-1)


async def test_a_batch_sent_by_the_delay_timer_runs_inline_too() -> None:
    engine = ThreadRecorder()
    # a real clock and a tiny delay: every request waits for the timer, which sends it;
    # the threshold is far above any batch's time, so the cost estimate always allows it
    async with DynamicBatcher(
        engine, max_batch_size=4, max_queue_delay_us=1, inline_execute_us=10_000_000
    ) as batcher:
        outputs = await _run(batcher, 12)
        stats = batcher.stats
    assert engine.threads[-1] is threading.current_thread()
    for i, y in enumerate(outputs):
        np.testing.assert_array_equal(y, rows(i, 1) * 10)
    assert stats.success_count == 12 and stats.queue_depth == 0 and stats.in_flight == 0

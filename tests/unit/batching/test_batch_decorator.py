"""``@batch`` on a function and on a method: the same tests run against both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
from batching_helpers import rows

from edgetier.batching import BatchedFunction, batch

Tensors = dict[str, np.ndarray]
Predict = Callable[[Tensors], Awaitable[Tensors]]


class Model:
    """A model object whose method is batched: each instance has its own batcher."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.batch_sizes: list[int] = []

    @batch(max_batch_size=4)
    def predict(self, inputs: Tensors) -> Tensors:
        self.batch_sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * self.scale}


class Bare:
    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    @batch
    def predict(self, inputs: Tensors) -> Tensors:
        self.batch_sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 10}


@pytest.fixture(params=["function", "method", "bare-function", "bare-method"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Predict, list[int]]]:
    sizes: list[int] = []
    fn: BatchedFunction
    if request.param == "function":

        @batch(max_batch_size=4)
        def predict(inputs: Tensors) -> Tensors:
            sizes.append(len(inputs["x"]))
            return {"y": inputs["x"] * 10}

        fn = predict
    elif request.param == "bare-function":

        @batch
        def predict_bare(inputs: Tensors) -> Tensors:
            sizes.append(len(inputs["x"]))
            return {"y": inputs["x"] * 10}

        fn = predict_bare
    elif request.param == "method":
        model = Model(10.0)
        sizes = model.batch_sizes
        fn = model.predict
    else:
        bare = Bare()
        fn = bare.predict
        sizes = bare.batch_sizes
    yield fn, sizes
    await fn.stop()


async def test_each_caller_gets_its_own_rows(target: tuple[Predict, list[int]]) -> None:
    predict, sizes = target
    results = await asyncio.gather(*(predict({"x": rows(10 * i, i % 3 + 1)}) for i in range(9)))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], rows(10 * i, i % 3 + 1) * 10)
    assert sum(sizes) == 18 and len(sizes) < 9


async def test_calls_waiting_together_are_batched(target: tuple[Predict, list[int]]) -> None:
    predict, _ = target
    await asyncio.gather(*(predict({"x": rows(i, 1)}) for i in range(8)))
    assert isinstance(predict, BatchedFunction) and predict.batcher is not None
    max_batch_size = predict.batcher.options.max_batch_size
    # the first call runs alone at once; the other 7 queue meanwhile and then share batches
    expected = {4: {1: 1, 4: 1, 3: 1}, 8: {1: 1, 7: 1}}[max_batch_size]
    assert predict.batcher.stats.batch_histogram == expected


async def test_the_batcher_is_made_once_and_reused(target: tuple[Predict, list[int]]) -> None:
    predict, _ = target
    assert isinstance(predict, BatchedFunction)
    await predict({"x": rows(0, 1)})
    first = predict.batcher
    await predict({"x": rows(1, 1)})
    assert first is not None and predict.batcher is first
    assert first.stats.success_count == 2


async def test_instances_of_a_class_have_their_own_batchers() -> None:
    a, b = Model(1.0), Model(2.0)
    ya, yb = await asyncio.gather(a.predict({"x": rows(1, 1)}), b.predict({"x": rows(1, 1)}))
    assert a.predict is a.predict  # bound once, then cached on the instance
    assert a.predict.batcher is not b.predict.batcher
    assert ya["y"][0, 0] == 1.0 and yb["y"][0, 0] == 2.0
    await a.predict.stop()
    await b.predict.stop()


async def test_options_reach_the_batcher() -> None:
    @batch(max_batch_size=2, max_queue_size=5, instance_count=2)
    def predict(inputs: Tensors) -> Tensors:
        return {"y": inputs["x"]}

    await predict({"x": rows(0, 2)})
    assert predict.batcher is not None
    assert predict.batcher.options.max_batch_size == 2
    assert predict.batcher.options.instance_count == 2
    assert predict.__name__ == "predict"
    await predict.stop()

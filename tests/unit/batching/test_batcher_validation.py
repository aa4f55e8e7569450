"""Bad options and bad requests: each error names the field, the value and the limit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from batching_helpers import GatedEngine, rows

from edgetier.batching import DynamicBatcher, batch
from edgetier.errors import ConfigError, InvalidInputError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": -1}, "max_batch_size must be >= 0, got -1"),
        ({"max_batch_size": 2.5}, "max_batch_size must be an integer, got 2.5"),
        (
            {"max_batch_size": 4, "max_queue_delay_us": -5},
            "max_queue_delay_us must be >= 0, got -5",
        ),
        ({"max_batch_size": 4, "max_queue_size": -1}, "max_queue_size must be >= 0, got -1"),
        ({"max_batch_size": 4, "instance_count": 0}, "instance_count must be >= 1, got 0"),
        (
            {"max_batch_size": 4, "default_timeout_us": -1},
            "default_timeout_us must be >= 0, got -1",
        ),
        ({"max_batch_size": 4, "priority_levels": -2}, "priority_levels must be >= 0, got -2"),
        (
            {"max_batch_size": 4, "priority_levels": 2, "default_priority_level": 3},
            "default_priority_level must be <= priority_levels (2), got 3",
        ),
        (
            {"max_batch_size": 4, "preferred_batch_sizes": [2, 8]},
            "preferred_batch_sizes[1] must be <= max_batch_size (4), got 8",
        ),
        (
            {"max_batch_size": 4, "preferred_batch_sizes": [0]},
            "preferred_batch_sizes[0] must be >= 1, got 0",
        ),
        (
            {"max_batch_size": 0, "preferred_batch_sizes": [1]},
            "preferred_batch_sizes[0] must be <= max_batch_size (0), got 1",
        ),
        ({"max_batch_size": 4, "preferred_batch_sizes": "4"}, "preferred_batch_sizes must be"),
        ({"max_batch_size": 4, "dynamic": "yes"}, "dynamic must be True or False, got 'yes'"),
    ],
)
def test_bad_options_are_refused_when_made(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        DynamicBatcher(GatedEngine(), **options)
    assert message in str(error.value)
    with pytest.raises(ConfigError) as error:
        batch(**options)  # the decorator checks the same options when applied
    assert message in str(error.value)


def test_execute_must_be_a_blocking_callable() -> None:
    async def coroutine(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    with pytest.raises(ConfigError, match="blocking function"):
        DynamicBatcher(coroutine, max_batch_size=4)
    with pytest.raises(ConfigError, match="must be a callable, got int"):
        DynamicBatcher(3, max_batch_size=4)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("inputs", "kwargs", "message"),
    [
        ({"x": rows(0, 9)}, {}, "input 'x' has batch size 9, over max_batch_size 8 of model 'm'"),
        ({"x": rows(0, 0)}, {}, "batch size 0"),
        ({"x": np.float32(1.0)}, {}, "input 'x' must be a numpy array, got float32"),
        ({"x": np.array(1.0)}, {}, "input 'x' has shape []"),
        ({"x": [[1.0]]}, {}, "input 'x' must be a numpy array, got list"),
        ({}, {}, "inputs must be a non-empty dict"),
        (
            {"x": rows(0, 2), "w": rows(0, 3)},
            {},
            "input 'w' has batch size 3 but input 'x' has 2",
        ),
        ({"x": rows(0, 1)}, {"priority": 4}, "priority must be between 0 and priority_levels (3)"),
        ({"x": rows(0, 1)}, {"priority": -1}, "got -1"),
        ({"x": rows(0, 1)}, {"timeout_us": -3}, "timeout_us must be >= 0, got -3"),
    ],
)
async def test_bad_requests_are_refused_before_queueing(
    inputs: Any, kwargs: dict[str, Any], message: str
) -> None:
    engine = GatedEngine()
    async with DynamicBatcher(engine, max_batch_size=8, priority_levels=3, name="m") as b:
        with pytest.raises(InvalidInputError) as error:
            await b.submit(inputs, **kwargs)
        assert message in str(error.value)
        assert b.queue_depth == 0
    assert engine.batches == []


def test_the_decorator_refuses_a_positional_option() -> None:
    with pytest.raises(ConfigError, match=r"write @batch\(max_batch_size=...\)"):
        batch(8)  # type: ignore[call-overload]


def test_the_decorator_refuses_a_coroutine_function() -> None:
    with pytest.raises(ConfigError, match="@batch function must be a blocking function"):

        @batch
        async def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return inputs

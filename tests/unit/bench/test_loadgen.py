from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edgetier.bench._loadgen import InputSpec, closed_loop, open_loop, parse_url, synthetic_inputs
from edgetier.errors import ConfigError


class FakeSender:
    """Stands in for RequestSender: counts sends, fails every ``fail_every``-th one."""

    batch_size = 2
    tensors = "binary"
    slots = 1
    timeout_s = 5.0

    def __init__(self, fail_every: int = 0) -> None:
        self.sent = 0
        self.fail_every = fail_every

    async def send(self, slot: int = 0) -> None:
        self.sent += 1
        await asyncio.sleep(0)
        if self.fail_every and self.sent % self.fail_every == 0:
            raise RuntimeError("refused")


def test_parse_url() -> None:
    assert parse_url("grpc://127.0.0.1:8001") == ("grpc", "127.0.0.1:8001")
    assert parse_url("http://localhost:8000") == ("http", "localhost:8000")
    for bad in ("127.0.0.1:8001", "https://h:1", "grpc://host"):
        with pytest.raises(ConfigError, match="grpc://host:port"):
            parse_url(bad)


def test_synthetic_inputs_shapes_and_types() -> None:
    specs = [
        InputSpec("a", "FP32", (-1, 3, -1)),
        InputSpec("b", "INT32", (-1, 16)),
        InputSpec("s", "BYTES", (-1,)),
    ]
    arrays = synthetic_inputs(specs, 4)
    assert arrays["a"].shape == (4, 3, 1) and arrays["a"].dtype == np.float32
    assert arrays["b"].shape == (4, 16) and arrays["b"].dtype == np.int32
    assert arrays["s"].dtype == np.object_


async def test_closed_loop_count_and_errors() -> None:
    sender = FakeSender(fail_every=5)
    result = await closed_loop(sender, 3, duration_s=None, count=40, warmup_s=0)  # type: ignore[arg-type]
    assert result.requests + result.errors >= 40
    assert result.errors >= 1 and result.first_error and "refused" in result.first_error
    assert result.latencies_ns.size == result.requests
    assert result.throughput_per_s == pytest.approx(result.requests * 2 / result.window_s)


async def test_closed_loop_needs_duration_or_count() -> None:
    with pytest.raises(ConfigError):
        await closed_loop(FakeSender(), 1, duration_s=None, count=None)  # type: ignore[arg-type]


async def test_open_loop_sends_the_schedule() -> None:
    sender = FakeSender()
    result = await open_loop(sender, 400, duration_s=0.25, warmup_s=0.05, seed=4)  # type: ignore[arg-type]
    from edgetier.bench import poisson_arrivals

    schedule = poisson_arrivals(400, 0.3, seed=4)
    assert sender.sent == schedule.size
    assert result.requests == int(np.sum(schedule >= 0.05))
    assert result.errors == 0
    assert np.all(result.latencies_ns > 0)

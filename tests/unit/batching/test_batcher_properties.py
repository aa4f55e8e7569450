"""Property: whatever the request sizes, each caller gets exactly its own rows, in order."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetier.batching import DynamicBatcher


@st.composite
def workloads(draw: st.DrawFn) -> tuple[int, list[int], list[tuple[int, int]], int]:
    max_batch_size = draw(st.integers(1, 8))
    preferred = draw(st.lists(st.integers(1, max_batch_size), max_size=2, unique=True))
    # (rows, width): two widths so that some requests cannot merge with others
    requests = draw(
        st.lists(st.tuples(st.integers(1, max_batch_size), st.sampled_from([2, 3])), max_size=24)
    )
    instances = draw(st.integers(1, 3))
    return max_batch_size, preferred, requests, instances


@settings(max_examples=40, deadline=None)
@given(workloads())
def test_every_request_gets_exactly_its_own_rows(
    workload: tuple[int, list[int], list[tuple[int, int]], int],
) -> None:
    max_batch_size, preferred, requests, instances = workload
    seen_batches: list[int] = []

    def execute(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen_batches.append(len(inputs["x"]))
        x = inputs["x"]
        return {"y": x * 2 + 1, "n": np.arange(len(x))}

    async def run() -> list[dict[str, np.ndarray]]:
        async with DynamicBatcher(
            execute,
            max_batch_size=max_batch_size,
            preferred_batch_sizes=preferred,
            max_queue_delay_us=200,
            instance_count=instances,
        ) as b:
            start = np.cumsum([0] + [n for n, _ in requests])
            results = await asyncio.gather(
                *(
                    b.submit({"x": _ids(int(s), n, w)})
                    for s, (n, w) in zip(start, requests, strict=False)
                )
            )
            return [r.outputs for r in results]

    outputs = asyncio.run(run())
    start = 0
    for (n, width), out in zip(requests, outputs, strict=True):
        np.testing.assert_array_equal(out["y"], _ids(start, n, width) * 2 + 1)
        assert out["n"].shape == (n,)
        start += n
    assert sum(seen_batches) == start
    assert all(size <= max_batch_size for size in seen_batches)


def _ids(start: int, n: int, width: int) -> np.ndarray:
    return np.repeat(np.arange(start, start + n, dtype=np.int64)[:, None], width, axis=1)

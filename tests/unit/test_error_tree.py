"""Errors a user meets come from EdgeTier's one tree, with a message that says what to do."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from edgetier.batching import DynamicBatcher
from edgetier.errors import EdgeTierError, StageError, UsageError
from edgetier.pipeline import FrameMeta, FramePacket, parse_pipeline


def _identity(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(inputs)


def test_a_batcher_used_from_another_loop_says_so() -> None:
    started = threading.Event()
    holder: list[DynamicBatcher] = []
    done = threading.Event()

    def other_loop() -> None:
        async def main() -> None:
            batcher = DynamicBatcher(_identity, max_batch_size=4)
            await batcher.start()
            holder.append(batcher)
            started.set()
            await asyncio.to_thread(done.wait)
            await batcher.stop()

        asyncio.run(main())

    thread = threading.Thread(target=other_loop)
    thread.start()
    started.wait(10)
    try:
        with pytest.raises(UsageError, match="started on another event loop"):
            asyncio.run(holder[0].submit({"x": np.zeros((1, 2), np.float32)}))
    finally:
        done.set()
        thread.join(10)
    assert issubclass(UsageError, EdgeTierError)


async def test_user_code_returning_the_wrong_type_is_a_stage_error() -> None:
    from edgetier.pipeline._stages import PythonCode

    cfg = parse_pipeline(
        {
            "name": "p",
            "sources": [{"id": "s", "kind": "synthetic"}],
            "stages": [{"id": "u", "kind": "python", "target": "builtins:id"}],
        }
    ).stages[0]
    stage = PythonCode(cfg)  # type: ignore[arg-type]
    frame = FramePacket(FrameMeta("s", 0, 0.0, 0.0, 4, 4), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(StageError, match=r"stage u: builtins:id returned int"):
        await stage.process(frame)

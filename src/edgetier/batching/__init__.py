"""The dynamic batcher: per-model queues that merge requests into batches for an engine.

async with DynamicBatcher(engine.run, max_batch_size=8, max_queue_delay_us=500) as b:
    result = await b.submit({"input": image[None]})   # result.outputs: its own rows
print(b.stats.execution_count, b.stats.batch_histogram)
"""

from __future__ import annotations

from edgetier.batching._batcher import DynamicBatcher
from edgetier.batching._decorator import BatchedFunction, batch
from edgetier.batching._results import BatcherStats, BatchResult, Tensors

__all__ = ["BatchResult", "BatchedFunction", "BatcherStats", "DynamicBatcher", "Tensors", "batch"]

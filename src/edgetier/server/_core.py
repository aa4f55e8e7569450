"""What HTTP and gRPC share: a decoded request, and running it on a model version.

The front ends decode their wire format into an :class:`InferRequest` checked against the
version's signature; :func:`run` queues it, counts it, selects the requested outputs and
writes those bound to shared memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetier.errors import InvalidInputError, ShutdownError
from edgetier.server._codec import raw_size, to_raw
from edgetier.server._manager import ModelManager, ModelVersion
from edgetier.server._shm import SharedMemoryRegistry
from edgetier.server._signature import TensorEntry


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for; ``shm`` is (region, offset, byte_size) when bound."""

    name: str
    binary: bool | None = None
    shm: tuple[str, int, int] | None = None


@dataclass(slots=True)
class InferRequest:
    """One inference request, decoded and checked against its model version."""

    id: str
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None
    priority: int = 0
    timeout_us: int = 0
    binary_output: bool = False


@dataclass(slots=True)
class OutputTensor:
    """One output to send back; ``shm_size`` is set when it went to shared memory."""

    entry: TensorEntry
    array: np.ndarray
    request: RequestedOutput | None
    shm_size: int = -1


def int_param(value: Any, field: str) -> int:
    """A non-negative integer request parameter."""
    if type(value) is not int or value < 0:
        raise InvalidInputError(f"parameter {field!r} must be an integer >= 0, got {value!r}")
    return value


async def run(
    manager: ModelManager,
    version: ModelVersion,
    request: InferRequest,
    shm: SharedMemoryRegistry,
    start_ns: int,
) -> list[OutputTensor]:
    """Run a request; count success or failure on the version's statistics."""
    stats = version.stats
    try:
        try:
            result = await version.batcher.submit(
                request.inputs, priority=request.priority, timeout_us=request.timeout_us
            )
        except ShutdownError:
            # A reload swapped this version out between lookup and submit: use the new one.
            newer = manager.get(version.name, version.version_str)
            if newer is version:
                raise
            version, stats = newer, newer.stats
            result = await version.batcher.submit(
                request.inputs, priority=request.priority, timeout_us=request.timeout_us
            )
        outputs = _select(version, request, result.outputs, shm)
    except BaseException:
        stats.record_failure(time.perf_counter_ns() - start_ns)
        raise
    rows = next(iter(request.inputs.values())).shape[0] if version.batched else 1
    stats.record_success(
        rows, time.perf_counter_ns() - start_ns, result.queue_ns, result.compute_ns
    )
    return outputs


def _select(
    version: ModelVersion,
    request: InferRequest,
    produced: dict[str, np.ndarray],
    shm: SharedMemoryRegistry,
) -> list[OutputTensor]:
    signature = version.signature
    if request.outputs is None:
        return [
            OutputTensor(signature.outputs[name], produced[name], None)
            for name in signature.output_names
            if name in produced
        ]
    selected: list[OutputTensor] = []
    for wanted in request.outputs:
        entry = signature.outputs[wanted.name]
        array = produced[wanted.name]
        out = OutputTensor(entry, array, wanted)
        if wanted.shm is not None:
            region, offset, size = wanted.shm
            needed = raw_size(array, entry.datatype)
            if needed > size:
                raise InvalidInputError(
                    f"output {wanted.name!r}: {needed} bytes do not fit in "
                    f"shared_memory_byte_size {size} of region {region!r}"
                )
            shm.write(region, offset, size, to_raw(array, entry.datatype), tensor=wanted.name)
            out.shm_size = needed
        selected.append(out)
    return selected

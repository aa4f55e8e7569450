"""The gRPC handlers' error path (edgetier.server._grpc._rpc), without a network."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from edgetier.server._grpc import GrpcService


class _Aborted(Exception):
    """What the fake context's abort raises, as grpc.aio's does."""


class _Context:
    def __init__(self) -> None:
        self.codes: list[grpc.StatusCode] = []

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.codes.append(code)
        raise _Aborted(details)


class _Request:
    """Stands in for a request message; only its lifetime matters here."""


async def test_a_refused_call_keeps_nothing_of_its_request_alive() -> None:
    """Each refusal raises its own error: an error object shared between calls would hold
    every earlier call's frame, request included, in its growing traceback."""
    backend = SimpleNamespace(refuse_while_draining=lambda: None, active=0)
    service = GrpcService(backend)  # type: ignore[arg-type]
    context = _Context()
    request = _Request()
    gone = weakref.ref(request)
    for call in (service.CudaSharedMemoryStatus, service.CudaSharedMemoryRegister):
        with pytest.raises(_Aborted, match="CUDA shared memory is not supported"):
            await call(request, context)
    del request
    gc.collect()
    assert gone() is None
    assert context.codes == [grpc.StatusCode.UNIMPLEMENTED] * 2
    assert backend.active == 0

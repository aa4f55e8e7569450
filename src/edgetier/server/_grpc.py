"""KServe v2 over gRPC: Triton's ``inference.GRPCInferenceService`` on grpc.aio.

The servicer derives from the class tritonclient generates from Triton's protos, so the
wire format is exactly Triton's. Inputs come from ``raw_input_contents`` (read in place),
from typed ``contents`` or from system shared memory; outputs go back in
``raw_output_contents`` (outputs bound to shared memory come last, without raw content,
so the client's index-based lookup stays right).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from edgetier.errors import EdgeTierError, InvalidInputError, UnsupportedError
from edgetier.server import _errors
from edgetier.server._backend import Backend
from edgetier.server._codec import from_raw, from_shm, to_raw
from edgetier.server._core import InferRequest, OutputTensor, RequestedOutput, int_param, run
from edgetier.server._manager import ModelVersion

pb = service_pb2

RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata of a refusal (UNAVAILABLE): milliseconds to wait before retrying, as
gRPC's own retry policy reads it (server pushback)."""

# datatype -> field of InferTensorContents that may carry it
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _param(p: Any) -> Any:
    """The value of an InferParameter, whichever field is set."""
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _shm_ref(params: Any, tensor: str, backend: Backend) -> tuple[str, int, int]:
    region = _param(params["shared_memory_region"])
    if not isinstance(region, str):
        raise InvalidInputError(
            f"tensor {tensor!r}: parameter 'shared_memory_region' must be a string"
        )
    if "shared_memory_byte_size" not in params:
        raise InvalidInputError(
            f"tensor {tensor!r}: parameter 'shared_memory_byte_size' is required with "
            f"'shared_memory_region'"
        )
    size = int_param(_param(params["shared_memory_byte_size"]), "shared_memory_byte_size")
    offset = 0
    if "shared_memory_offset" in params:
        offset = int_param(_param(params["shared_memory_offset"]), "shared_memory_offset")
    backend.shm.check(region, offset, size, tensor=tensor)
    return region, offset, size


def decode_request(request: Any, version: ModelVersion, backend: Backend) -> InferRequest:
    """Decode and check a ModelInferRequest for ``version``."""
    signature = version.signature
    raws = request.raw_input_contents
    raw_index = 0
    inputs: dict[str, np.ndarray] = {}
    if not request.inputs:
        raise InvalidInputError("field 'inputs' must hold at least one tensor")
    for tensor in request.inputs:
        name = tensor.name
        shape = list(tensor.shape)
        entry = signature.check_input(name, tensor.datatype, shape)
        if name in inputs:
            raise InvalidInputError(f"input {name!r} appears more than once")
        params = tensor.parameters
        if params and "shared_memory_region" in params:
            region, offset, size = _shm_ref(params, name, backend)
            inputs[name] = from_shm(
                backend.shm,
                region,
                offset,
                size,
                entry.datatype,
                shape,
                name=name,
                where=f"shared memory region {region!r} (byte_size {size})",
            )
        elif raws:
            if raw_index >= len(raws):
                raise InvalidInputError(
                    f"input {name!r}: raw_input_contents has {len(raws)} entries, fewer than "
                    f"the inputs that need one"
                )
            inputs[name] = from_raw(
                raws[raw_index],
                entry.datatype,
                shape,
                name=name,
                where=f"raw_input_contents[{raw_index}]",
            )
            raw_index += 1
        elif tensor.HasField("contents"):
            inputs[name] = _from_contents(tensor.contents, entry.datatype, shape, name)
        else:
            raise InvalidInputError(
                f"input {name!r} has no data: set raw_input_contents, contents or "
                f"shared_memory_region"
            )
    if raw_index != len(raws):
        raise InvalidInputError(
            f"raw_input_contents has {len(raws)} entries, the inputs use {raw_index}"
        )
    signature.check_complete(inputs)
    outputs: list[RequestedOutput] | None = None
    if request.outputs:
        outputs = []
        for out in request.outputs:
            entry = signature.check_output(out.name)
            if any(o.name == entry.name for o in outputs):
                raise InvalidInputError(f"output {entry.name!r} is requested more than once")
            ref = None
            if out.parameters and "shared_memory_region" in out.parameters:
                ref = _shm_ref(out.parameters, out.name, backend)
            if out.parameters and "classification" in out.parameters:
                raise InvalidInputError(
                    f"output {out.name!r}: the classification extension is not supported"
                )
            outputs.append(RequestedOutput(entry.name, True, ref))
    priority = timeout_us = 0
    if request.parameters:
        if "priority" in request.parameters:
            priority = int_param(_param(request.parameters["priority"]), "priority")
        if "timeout" in request.parameters:
            timeout_us = int_param(_param(request.parameters["timeout"]), "timeout")
    return InferRequest(request.id, inputs, outputs, priority, timeout_us, True)


def _from_contents(contents: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    from edgetier.server._codec import element_count, from_json

    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInputError(
            f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents"
        )
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: contents.{field} has {len(values)} elements, shape {shape} "
            f"needs {count}"
        )
    if datatype == "BYTES":
        from edgetier.server._codec import deserialize_bytes, serialize_bytes

        return deserialize_bytes(
            serialize_bytes(np.array(list(values), dtype=object)),
            count,
            name=name,
            where=f"contents.{field}",
        ).reshape(shape)
    return from_json(list(values), datatype, shape, name=name)


def encode_response(
    version: ModelVersion, request: InferRequest, outputs: list[OutputTensor]
) -> Any:
    response = pb.ModelInferResponse(
        model_name=version.name, model_version=version.version_str, id=request.id
    )
    raws = []
    in_shm = []
    for out in outputs:
        if out.shm_size >= 0:
            in_shm.append(out)
            continue
        response.outputs.add(
            name=out.entry.name, datatype=out.entry.datatype, shape=out.array.shape
        )
        raws.append(bytes(to_raw(out.array, out.entry.datatype)))
    response.raw_output_contents.extend(raws)
    for out in in_shm:
        tensor = response.outputs.add(
            name=out.entry.name, datatype=out.entry.datatype, shape=out.array.shape
        )
        assert out.request is not None and out.request.shm is not None
        region, offset, _ = out.request.shm
        tensor.parameters["shared_memory_region"].string_param = region
        tensor.parameters["shared_memory_byte_size"].int64_param = out.shm_size
        if offset:
            tensor.parameters["shared_memory_offset"].int64_param = offset
    return response


Rpc = Callable[[Any, Any, Any], Awaitable[Any]]


class _Undecodable:
    """A request message that is not valid protobuf: refused by its handler, not by gRPC
    (which would answer UNKNOWN, a server fault, for what is bad input)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def refuse(self) -> None:
        raise InvalidInputError(f"the request message cannot be parsed: {self.reason}")


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Undecodable(str(exc))

    return deserialize


class _Recorder:
    """Stands in for a server to collect the handlers tritonclient's generated code makes."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, handlers


def add_to_server(service: GrpcService, server: grpc.aio.Server) -> None:
    """Register the service as Triton's generated code does, but with request messages
    that fail to parse reaching the handler (INVALID_ARGUMENT) instead of failing in gRPC."""
    recorder = _Recorder()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(service, recorder)
    handlers = {
        name: handler._replace(request_deserializer=_lenient(handler.request_deserializer))
        for name, handler in recorder.handlers.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(recorder.service, handlers),)
    )
    server.add_registered_method_handlers(recorder.service, handlers)


def _rpc(*, work: bool = True) -> Callable[[Rpc], Rpc]:
    """The one error path of the unary handlers: an exception becomes the status it maps
    to (edgetier.server._errors), with ``grpc-retry-pushback-ms`` in the trailing
    metadata when the client should retry later. ``work`` handlers count as requests in
    flight for the drain and are refused once the server drains."""

    def wrap(handler: Rpc) -> Rpc:
        @functools.wraps(handler)
        async def rpc(self: GrpcService, request: Any, context: Any) -> Any:
            backend = self.backend
            counted = False
            try:
                if type(request) is _Undecodable:
                    request.refuse()
                if work:
                    backend.refuse_while_draining()
                    backend.active += 1
                    counted = True
                return await handler(self, request, context)
            except Exception as exc:
                retry = _errors.retry_after_s(exc)
                if retry is not None:
                    context.set_trailing_metadata(
                        ((RETRY_PUSHBACK_KEY, str(max(1, math.ceil(retry * 1000)))),)
                    )
                await context.abort(_errors.grpc_code(exc), _errors.message(exc))
            finally:
                if counted:
                    backend.active -= 1

        return rpc

    return wrap


class GrpcService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The GRPCInferenceService of one :class:`Backend`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def _infer(self, request: Any) -> Any:
        start = time.perf_counter_ns()
        backend = self.backend
        version = backend.manager.get(request.model_name, request.model_version)
        try:
            decoded = decode_request(request, version, backend)
        except EdgeTierError:
            version.stats.record_failure(time.perf_counter_ns() - start)
            raise
        outputs = await run(backend.manager, version, decoded, backend.shm, start)
        return encode_response(version, decoded, outputs)

    @_rpc()
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return await self._infer(request)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Answer each request of the stream as it completes; errors go in the response.

        Every task it starts is awaited before it returns, also when the client cancels.
        """
        backend = self.backend
        results: asyncio.Queue[Any] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()

        async def one(request: Any) -> None:
            try:
                if type(request) is _Undecodable:
                    request.refuse()
                backend.refuse_while_draining()
                backend.active += 1
                try:
                    response = await self._infer(request)
                finally:
                    backend.active -= 1
                await results.put(pb.ModelStreamInferResponse(infer_response=response))
            except Exception as exc:
                answer = pb.ModelStreamInferResponse(error_message=_errors.message(exc))
                if type(request) is not _Undecodable:
                    answer.infer_response.model_name = request.model_name
                    answer.infer_response.model_version = request.model_version
                    answer.infer_response.id = request.id
                await results.put(answer)

        async def reader() -> None:
            async for request in request_iterator:
                task = asyncio.create_task(one(request))
                pending.add(task)
                task.add_done_callback(pending.discard)

        read = asyncio.create_task(reader())
        getter: asyncio.Future[Any] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(results.get())
                done, _ = await asyncio.wait({getter, read}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                if read.exception() is not None:
                    raise read.exception()  # type: ignore[misc]
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
                while not results.empty():
                    yield results.get_nowait()
                return
        finally:
            waits: list[asyncio.Future[Any]] = [read, *pending]
            if getter is not None:
                waits.append(getter)
            for task in waits:
                task.cancel()
            # awaited, so that none is destroyed while pending when the stream ends
            await asyncio.gather(*waits, return_exceptions=True)

    @_rpc(work=False)
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.backend.live)

    @_rpc(work=False)
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.backend.ready)

    @_rpc()
    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(
            ready=self.backend.manager.is_ready(request.name, request.version)
        )

    @_rpc()
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        meta = self.backend.server_metadata
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    @_rpc()
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        meta = self.backend.model_metadata(request.name, request.version)
        meta.pop("parameters", None)
        return json_format.ParseDict(meta, pb.ModelMetadataResponse())

    @_rpc()
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        config = self.backend.model_config(request.name, request.version)
        message = json_format.ParseDict(
            config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True
        )
        return pb.ModelConfigResponse(config=message)

    @_rpc()
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        stats = self.backend.statistics(request.name, request.version)
        return json_format.ParseDict(
            stats, pb.ModelStatisticsResponse(), ignore_unknown_fields=True
        )

    @_rpc()
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        rows = self.backend.repository_index(ready_only=request.ready)
        return json_format.ParseDict({"models": rows}, pb.RepositoryIndexResponse())

    @_rpc()
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        params = {k: v for k, v in request.parameters.items()}
        await self.backend.load(request.model_name, params)
        return pb.RepositoryModelLoadResponse()

    @_rpc()
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self.backend.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @_rpc()
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        regions = {r["name"]: r for r in self.backend.shm_status(request.name)}
        return json_format.ParseDict({"regions": regions}, pb.SystemSharedMemoryStatusResponse())

    @_rpc()
    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        self.backend.shm_register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @_rpc()
    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self.backend.shm_unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @_rpc()
    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        raise _no_cuda_shm()

    @_rpc()
    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise _no_cuda_shm()

    @_rpc()
    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        raise _no_cuda_shm()

    @_rpc()
    async def TraceSetting(self, request: Any, context: Any) -> Any:
        raise UnsupportedError("trace settings are not supported")

    @_rpc()
    async def LogSettings(self, request: Any, context: Any) -> Any:
        raise UnsupportedError("log settings are not supported")


def _no_cuda_shm() -> UnsupportedError:
    # a new error each time: one raised again and again would keep every earlier call's
    # frame (its request, its context) alive in its ever longer traceback
    return UnsupportedError(
        "CUDA shared memory is not supported by this server; use system shared memory "
        "or send the data in the request"
    )

"""A gRPC inference service that does nothing: the floor of a round trip on this machine.

It speaks Triton's GRPCInferenceService (the same generated code as the EdgeTier server,
grpc.aio on uvloop) and answers every ModelInfer with a canned [1, 4] FP32 output, so a
client measured against it pays the transport, the protobuf work and its own code, and
nothing of a server's. Run: ``python benchmarks/_null_grpc.py PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import numpy as np
import uvloop
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

_RESPONSE = pb.ModelInferResponse(model_name="small", model_version="1")
_RESPONSE.outputs.add(name="output", datatype="FP32", shape=[1, 4])
_RESPONSE.raw_output_contents.append(np.zeros(4, np.float32).tobytes())


class NullService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return _RESPONSE

    async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Any:
        async for _ in request_iterator:
            yield pb.ModelStreamInferResponse(infer_response=_RESPONSE)


async def serve(port: int) -> None:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(NullService(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))

"""Regression tests for what a hostile but legitimate client could do to the node: shrink a
shared-memory region under the server, claim huge element counts with no data, ask for
one output many times, pad a version, cancel a stream."""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from edgetier.testing import (
    RunningServer,
    ServerProcess,
    demo_repository,
    edit_config,
    running_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = demo_repository(tmp_path_factory.mktemp("robust") / "repo")
    with running_server(repo) as running:
        yield running


def post(server: RunningServer, path: str, body: bytes, headers: dict[str, str]) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def simple_inputs(module: Any) -> list[Any]:
    tensors = [module.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for tensor in tensors:
        tensor.set_data_from_numpy(np.ones((1, 16), np.int32))
    return tensors


# ---------------------------------------------------------------- 1. shared memory


def test_a_region_shrunk_under_the_server_is_a_4xx_and_the_server_lives(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple",))
    key = f"edgetier-shrink-{uuid.uuid4().hex[:12]}"
    handle = shm.create_shared_memory_region(key, f"/{key}", 128)
    try:
        shm.set_shared_memory_region(handle, [np.ones((1, 32), np.int32)])
        with ServerProcess(repo, tmp_path / "logs") as served:
            http_client = httpclient.InferenceServerClient(f"127.0.0.1:{served.http_port}")
            grpc_client = grpcclient.InferenceServerClient(served.grpc_url)
            http_client.register_system_shared_memory("in", f"/{key}", 128)
            for module, client in ((httpclient, http_client), (grpcclient, grpc_client)):
                inputs = simple_inputs(module)
                inputs[0].set_shared_memory("in", 64)
                inputs[1].set_shared_memory("in", 64, offset=64)
                assert client.infer("simple", inputs).as_numpy("OUTPUT0").sum() == 32
            os.truncate(f"/dev/shm/{key}", 0)  # what the region's owner may do at any time
            for module, client, status in (
                (httpclient, http_client, "400"),
                (grpcclient, grpc_client, "StatusCode.INVALID_ARGUMENT"),
            ):
                inputs = simple_inputs(module)
                inputs[0].set_shared_memory("in", 64)
                inputs[1].set_shared_memory("in", 64, offset=64)
                with pytest.raises(InferenceServerException, match="now holds 0") as refused:
                    client.infer("simple", inputs)
                assert refused.value.status() == status
                assert "INPUT0" in str(refused.value) and "register it again" in str(refused.value)
            os.unlink(f"/dev/shm/{key}")  # gone altogether: the same answer
            inputs = simple_inputs(httpclient)
            inputs[0].set_shared_memory("in", 64)
            with pytest.raises(InferenceServerException, match="now holds 0"):
                http_client.infer("simple", inputs)
            assert served.alive(), served.err
            assert served.get("/v2/health/ready")[0] == 200
            assert grpc_client.infer("simple", simple_inputs(grpcclient)).as_numpy(
                "OUTPUT0"
            ).tolist() == [[2] * 16]
            http_client.unregister_system_shared_memory("in")
    finally:
        if os.path.exists(f"/dev/shm/{key}"):
            shm.destroy_shared_memory_region(handle)


# ------------------------------------------------------------ 2. claimed element counts


def binary_request(name: str, datatype: str, shape: list[int], data: bytes) -> tuple[bytes, dict]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize("count", [268_435_456, 2**40])
def test_a_bytes_shape_without_its_data_is_refused_before_allocating(
    server: RunningServer, count: int
) -> None:
    me = psutil.Process()
    before = me.memory_info().rss
    body, headers = binary_request("IN_BYTES", "BYTES", [1, count], b"")
    assert len(body) < 200
    status, answer = post(server, "/v2/models/identity/infer", body, headers)
    assert status == 400, answer
    assert "IN_BYTES" in answer["error"] and f"needs {count} BYTES elements" in answer["error"]
    assert me.memory_info().rss - before < 50 * 2**20


def test_claimed_counts_are_checked_on_every_path(server: RunningServer) -> None:
    me = psutil.Process()
    before = me.memory_info().rss
    json_body = json.dumps(
        {"inputs": [{"name": "IN_BYTES", "datatype": "BYTES", "shape": [1, 2**40], "data": []}]}
    ).encode()
    status, answer = post(server, "/v2/models/identity/infer", json_body, {})
    assert status == 400 and "IN_BYTES" in answer["error"]
    body, headers = binary_request("IN_FP32", "FP32", [1, 2**50], b"")
    status, answer = post(server, "/v2/models/identity/infer", body, headers)
    assert status == 400 and "spans more than" in answer["error"]
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="identity")
        request.inputs.add(name="IN_BYTES", datatype="BYTES", shape=[1, 2**28])
        request.raw_input_contents.append(b"")
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at least" in refused.value.details()
    assert me.memory_info().rss - before < 50 * 2**20


# ----------------------------------------------------------------------- 5. small ones


def test_an_output_requested_twice_is_refused(server: RunningServer) -> None:
    body = {
        "inputs": [
            {"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
            for n in ("INPUT0", "INPUT1")
        ],
        "outputs": [{"name": "OUTPUT0"}] * 3,
    }
    status, answer = post(server, "/v2/models/simple/infer", json.dumps(body).encode(), {})
    assert status == 400 and "'OUTPUT0' is requested more than once" in answer["error"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT1") for _ in range(2)]
    with pytest.raises(InferenceServerException, match="'OUTPUT1' is requested more than once"):
        client.infer("simple", simple_inputs(grpcclient), outputs=outputs)


@pytest.mark.parametrize("version", ["1 ", " 1", "+1", "1_0", "\u0661"])
def test_a_version_must_be_plain_digits(server: RunningServer, version: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="positive integer") as refused:
        client.infer("simple", simple_inputs(grpcclient), model_version=version)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.infer("simple", simple_inputs(grpcclient), model_version="1") is not None


def test_a_cancelled_stream_leaves_no_task_pending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = demo_repository(tmp_path / "repo", ("small",))
    # requests wait 2 s in the queue: the stream is cancelled while they are pending
    edit_config(repo, "small", dynamic_batching={"max_queue_delay_microseconds": 2_000_000})
    caplog.set_level(logging.ERROR, logger="asyncio")

    async def cancel_a_stream(url: str) -> None:
        async with grpc.aio.insecure_channel(url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

            async def requests() -> Any:
                for i in range(3):
                    request = service_pb2.ModelInferRequest(model_name="small", id=str(i))
                    request.inputs.add(name="input", datatype="FP32", shape=[1, 16])
                    request.raw_input_contents.append(bytes(64))
                    yield request
                await asyncio.sleep(30)

            call = stub.ModelStreamInfer(requests())
            await asyncio.sleep(0.5)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call.read()

    with running_server(repo) as server:
        asyncio.run(cancel_a_stream(server.grpc_url))
        server.call(asyncio.sleep(2.5))  # past the queue delay: the batch ran and is gone
        gc.collect()
        server.call(asyncio.sleep(0.1))
        assert server.call(server.server.manager.get("small").batcher.stop(drain=True)) is None
    destroyed = [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert not destroyed, destroyed[0].getMessage()

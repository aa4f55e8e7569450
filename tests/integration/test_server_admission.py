"""Admission by queue time through the server: a request whose estimated wait is over the
model's max_queue_wait_microseconds, or over its own timeout, is refused at once with 503
and Retry-After (HTTP) or UNAVAILABLE and grpc-retry-pushback-ms (gRPC)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgetier.runtime import DATATYPES, to_numpy_dtype
from edgetier.testing import (
    RunningServer,
    demo_repository,
    edit_config,
    read_http_response,
    running_server,
)

pytestmark = pytest.mark.integration

DTYPES = {t: to_numpy_dtype(t) for t in DATATYPES}  # the demo identity's inputs


def infer_http(server: RunningServer, **parameters: int) -> tuple[int, dict[str, str], Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]
    }
    if parameters:
        body["parameters"] = parameters
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=30)
    try:
        conn.request("POST", "/v2/models/small/infer", body=json.dumps(body).encode())
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, json.loads(response.read())
    finally:
        conn.close()


def infer_grpc(server: RunningServer, **parameters: int) -> Any:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="small")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(bytes(64))
        for key, value in parameters.items():
            request.parameters[key].int64_param = value
        return stub.ModelInfer(request, timeout=30)


def in_background(server: RunningServer) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(infer_http(server)))
    thread.start()
    return thread, results


def wait_until_queued(server: RunningServer, depth: int, model: str = "small") -> None:
    while server.server.manager.get(model).batcher.queue_depth < depth:
        server.call(asyncio.sleep(0.01))


@pytest.mark.parametrize("budget_us", [1, None], ids=["config budget", "request timeout"])
def test_requests_over_the_budget_are_refused_with_a_retry_hint(
    tmp_path: Path, budget_us: int | None
) -> None:
    repo = demo_repository(tmp_path / "repo", ("small",))
    batching: dict[str, int] = {"max_queue_delay_microseconds": 500_000}
    if budget_us is not None:
        batching["max_queue_wait_microseconds"] = budget_us
    edit_config(repo, "small", dynamic_batching=batching)
    own = {} if budget_us is not None else {"timeout": 1}  # 1 us: no queue fits it
    with running_server(repo) as server:
        assert infer_http(server)[0] == 200  # one batch: the service rate is measured
        first, results = in_background(server)
        wait_until_queued(server, 1)  # it waits out the 0.5 s delay in the queue
        status, headers, answer = infer_http(server, **own)
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert "overloaded" in answer["error"] and "1 queued" in answer["error"]
        with pytest.raises(grpc.RpcError) as refused:
            infer_grpc(server, **own)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "overloaded" in (refused.value.details() or "")
        trailers = dict(refused.value.trailing_metadata() or ())
        assert int(trailers["grpc-retry-pushback-ms"]) >= 1
        first.join(30)
        assert results[0][0] == 200  # the admitted request was served
        stats = server.server.manager.get("small").batcher.stats
        assert stats.rejected_count == 2
    if budget_us is None:
        return
    # without the budget, the same requests all queue
    edit_config(repo, "small", dynamic_batching={"max_queue_delay_microseconds": 500_000})
    with running_server(repo) as server:
        assert infer_http(server)[0] == 200
        first, results = in_background(server)
        wait_until_queued(server, 1)
        assert infer_http(server)[0] == 200
        first.join(30)
        assert results[0][0] == 200


def test_a_large_request_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("identity",))
    edit_config(
        repo,
        "identity",
        dynamic_batching={
            "max_queue_delay_microseconds": 500_000,
            "max_queue_wait_microseconds": 1,
        },
    )
    data = bytes(256 * 1024)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "IN_UINT8",
                    "datatype": "UINT8",
                    "shape": [1, len(data)],
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    head = (
        f"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(header) + len(data)}\r\n\r\n"
    ).encode()
    with running_server(repo) as server:
        version = server.server.manager.get("identity")
        tensors = {f"IN_{t}": np.zeros((1, 1), dtype) for t, dtype in DTYPES.items()}
        tensors["IN_BYTES"] = np.array([[b"x"]], dtype=object)
        server.call(version.batcher.submit(tensors))  # one batch: the rate is measured
        first = asyncio.run_coroutine_threadsafe(version.batcher.submit(tensors), server.loop)
        wait_until_queued(server, 1, model="identity")
        with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=30) as sock:
            sock.sendall(head + header + data[:1024])  # the rest of the body never comes
            status, headers, answer = read_http_response(sock)
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert "overloaded" in answer["error"]
        first.result(30)
        assert version.batcher.stats.rejected_count == 1

"""SIGTERM drains: readiness goes false first, requests on open connections (and new ones)
get 503 with a retry hint, work in flight finishes, stalled uploads end at their body
timeout, long before the drain would."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgetier.testing import ServerProcess, demo_repository, edit_config, read_http_response

pytestmark = pytest.mark.integration


def test_sigterm_refuses_new_work_finishes_old_and_ends_stalled_uploads(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("small",))
    # the request in flight waits 3 s in the queue: SIGTERM comes while it waits
    edit_config(repo, "small", dynamic_batching={"max_queue_delay_microseconds": 3_000_000})
    options = ["--http-body-timeout-s", "2", "--drain-timeout-s", "60"]
    with ServerProcess(repo, tmp_path / "logs", *options) as served:
        port = served.http_port
        stalled = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(
                b"POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                b'\r\n{"inputs": ['
            )
            stalled.append(sock)
        keep_alive = socket.create_connection(("127.0.0.1", port), timeout=30)
        keep_alive.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_http_response(keep_alive)[0] == 200

        client = grpcclient.InferenceServerClient(served.grpc_url)
        tensor = grpcclient.InferInput("input", [1, 16], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
        in_flight: list[Any] = []
        caller = threading.Thread(
            target=lambda: in_flight.append(client.infer("small", [tensor]).as_numpy("output"))
        )
        caller.start()
        time.sleep(0.5)
        assert served.proc is not None
        served.proc.send_signal(15)

        # readiness first: the listener is still open and says 503
        deadline = time.monotonic() + 10
        while served.get("/v2/health/ready")[0] != 503:
            assert time.monotonic() < deadline, "readiness never went false"
            time.sleep(0.02)
        assert served.get("/v2/health/live")[0] == 200
        # a request on a connection that was already open: 503, Retry-After, JSON
        body = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16}]}
        ).encode()
        keep_alive.sendall(
            b"POST /v2/models/small/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        status, headers, answer = read_http_response(keep_alive)
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert "shutting down" in answer["error"]
        # and over gRPC: UNAVAILABLE with the retry hint in the trailing metadata
        with grpc.insecure_channel(served.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = service_pb2.ModelInferRequest(model_name="small")
            request.inputs.add(name="input", datatype="FP32", shape=[1, 16])
            request.raw_input_contents.append(bytes(64))
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            trailers = dict(refused.value.trailing_metadata() or ())
            assert int(trailers["grpc-retry-pushback-ms"]) >= 1
        assert not in_flight, "the request in flight should still be waiting"

        caller.join(30)
        assert len(in_flight) == 1 and in_flight[0].shape == (1, 4)  # it finished
        for sock in stalled:  # their body timeout, not the drain's end, ended them
            status, headers, answer = read_http_response(sock)
            assert status == 408 and headers["content-type"] == "application/json"
            assert "body stopped arriving" in answer["error"]
            sock.close()
        keep_alive.close()
        assert served.proc.wait(30) == 0
    assert "drain timeout" not in served.err

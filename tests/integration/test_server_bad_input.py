"""Every bad input of the issue gets a 4xx (gRPC INVALID_ARGUMENT / NOT_FOUND) whose
message names the tensor or field and the limit; the server stays up. Plus a
property-based test: random bodies and requests never give a 5xx, a hang or a crash."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgetier.testing import RunningServer, demo_repository, running_server

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = demo_repository(tmp_path_factory.mktemp("bad") / "repo")
    with running_server(repo, max_request_size_bytes=LIMIT) as running:
        yield running


def post(
    server: RunningServer, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=20)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        conn.close()


def assert_up(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=20)
    conn.request("GET", "/v2/health/ready")
    assert conn.getresponse().status == 200
    conn.close()


def simple_body(**changes: Any) -> dict[str, Any]:
    tensor = {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
    other = dict(tensor, name="INPUT1")
    tensor.update(changes)
    return {"inputs": [tensor, other]}


CASES: list[tuple[str, str, bytes, dict[str, str], int, list[str]]] = [
    (
        "unknown model",
        "/v2/models/nope/infer",
        json.dumps(simple_body()).encode(),
        {},
        404,
        ["nope"],
    ),
    (
        "unknown version",
        "/v2/models/simple/versions/7/infer",
        json.dumps(simple_body()).encode(),
        {},
        404,
        ["version 7"],
    ),
    (
        "wrong datatype",
        "/v2/models/simple/infer",
        json.dumps(simple_body(datatype="FP32")).encode(),
        {},
        400,
        ["INPUT0", "FP32", "INT32"],
    ),
    (
        "wrong shape",
        "/v2/models/simple/infer",
        json.dumps(simple_body(shape=[1, 8], data=list(range(8)))).encode(),
        {},
        400,
        ["INPUT0", "16"],
    ),
    (
        "wrong element count",
        "/v2/models/simple/infer",
        json.dumps(simple_body(data=list(range(15)))).encode(),
        {},
        400,
        ["INPUT0", "15", "16"],
    ),
    (
        "batch over max_batch_size",
        "/v2/models/simple/infer",
        json.dumps(simple_body(shape=[9, 16], data=list(range(144)))).encode(),
        {},
        400,
        ["INPUT0", "9", "max_batch_size 8"],
    ),
    ("invalid JSON", "/v2/models/simple/infer", b'{"inputs": [', {}, 400, ["not valid JSON"]),
    (
        "unknown input",
        "/v2/models/simple/infer",
        json.dumps(simple_body(name="INPUT9")).encode(),
        {},
        400,
        ["INPUT9", "INPUT0"],
    ),
    (
        "missing data",
        "/v2/models/simple/infer",
        json.dumps(
            {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16]}]}
        ).encode(),
        {},
        400,
        ["INPUT0", "data"],
    ),
    (
        "text in an integer tensor",
        "/v2/models/simple/infer",
        json.dumps(simple_body(data=["x"] * 16)).encode(),
        {},
        400,
        ["INPUT0", "integers"],
    ),
    (
        "unregistered shm region",
        "/v2/models/simple/infer",
        json.dumps(
            simple_body(
                parameters={"shared_memory_region": "nowhere", "shared_memory_byte_size": 64}
            )
        ).encode(),
        {},
        400,
        ["INPUT0", "nowhere", "not registered"],
    ),
]


def _binary_body(declared: int, sent: int, header_extra: int = 0) -> tuple[bytes, dict[str, str]]:
    body = simple_body()
    body["inputs"][0] = {
        "name": "INPUT0",
        "datatype": "INT32",
        "shape": [1, 16],
        "parameters": {"binary_data_size": declared},
    }
    header = json.dumps(body).encode()
    payload = header + bytes(sent)
    return payload, {"Inference-Header-Content-Length": str(len(header) + header_extra)}


@pytest.mark.parametrize(
    ("case", "path", "body", "headers", "status", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_http_request(
    server: RunningServer,
    case: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    words: list[str],
) -> None:
    got, answer = post(server, path, body, headers)
    assert got == status, answer
    for word in words:
        assert word in answer["error"], (word, answer)
    assert_up(server)


def test_binary_size_disagrees_with_shape(server: RunningServer) -> None:
    body, headers = _binary_body(declared=60, sent=60)
    status, answer = post(server, "/v2/models/simple/infer", body, headers)
    assert status == 400 and "INPUT0" in answer["error"] and "64" in answer["error"]
    assert_up(server)


def test_truncated_binary_body(server: RunningServer) -> None:
    body, headers = _binary_body(declared=64, sent=20)
    status, answer = post(server, "/v2/models/simple/infer", body, headers)
    assert status == 400 and "binary_data_size 64" in answer["error"]
    assert "20 bytes left" in answer["error"]
    assert_up(server)


def test_header_length_past_the_body(server: RunningServer) -> None:
    body, headers = _binary_body(declared=64, sent=64, header_extra=1000)
    status, answer = post(server, "/v2/models/simple/infer", body, headers)
    assert status == 400 and "Inference-Header-Content-Length" in answer["error"]
    assert_up(server)


def test_body_over_the_limit_is_refused_before_reading(server: RunningServer) -> None:
    status, answer = post(server, "/v2/models/simple/infer", b"x" * (LIMIT + 1))
    assert status == 413 and str(LIMIT) in answer["error"]
    assert_up(server)


def test_connection_dropped_mid_body(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\n"
            b'Content-Length: 1000\r\n\r\n{"inputs": ['
        )
    assert_up(server)


def test_cuda_shared_memory_is_a_clear_4xx(server: RunningServer) -> None:
    status, answer = post(server, "/v2/cudasharedmemory/region/r/register", b"{}")
    assert status == 400 and "CUDA shared memory is not supported" in answer["error"]


GRPC_CASES: list[tuple[str, dict[str, Any], grpc.StatusCode, list[str]]] = [
    ("unknown model", {"model_name": "nope"}, grpc.StatusCode.NOT_FOUND, ["nope"]),
    ("unknown version", {"model_version": "3"}, grpc.StatusCode.NOT_FOUND, ["version 3"]),
    ("wrong datatype", {"datatype": "FP32"}, grpc.StatusCode.INVALID_ARGUMENT, ["INPUT0", "FP32"]),
    ("wrong shape", {"shape": [1, 15]}, grpc.StatusCode.INVALID_ARGUMENT, ["INPUT0", "16"]),
    (
        "raw size",
        {"raw": bytes(60)},
        grpc.StatusCode.INVALID_ARGUMENT,
        ["INPUT0", "60 bytes", "64"],
    ),
    (
        "batch over max",
        {"shape": [9, 16], "raw": bytes(9 * 64)},
        grpc.StatusCode.INVALID_ARGUMENT,
        ["max_batch_size 8"],
    ),
    (
        "shm too small",
        {"shm": ("absent", 64)},
        grpc.StatusCode.INVALID_ARGUMENT,
        ["INPUT0", "absent"],
    ),
]


def _grpc_request(
    model_name: str = "simple",
    model_version: str = "",
    datatype: str = "INT32",
    shape: list[int] | None = None,
    raw: bytes | None = None,
    shm: tuple[str, int] | None = None,
) -> Any:
    shape = shape or [1, 16]
    request = service_pb2.ModelInferRequest(model_name=model_name, model_version=model_version)
    first = request.inputs.add(name="INPUT0", datatype=datatype, shape=shape)
    request.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 16])
    if shm is not None:
        first.parameters["shared_memory_region"].string_param = shm[0]
        first.parameters["shared_memory_byte_size"].int64_param = shm[1]
    else:
        request.raw_input_contents.append(raw if raw is not None else bytes(64))
    request.raw_input_contents.append(np.ones(16, np.int32).tobytes())
    return request


@pytest.mark.parametrize(
    ("case", "changes", "code", "words"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES]
)
def test_bad_grpc_request(
    server: RunningServer,
    case: str,
    changes: dict[str, Any],
    code: grpc.StatusCode,
    words: list[str],
) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_grpc_request(**changes), timeout=20)
        assert info.value.code() == code
        for word in words:
            assert word in info.value.details(), (word, info.value.details())
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=20).ready


def test_grpc_message_over_the_limit(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_grpc_request(raw=bytes(LIMIT + 10)), timeout=20)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=20).live


# ----------------------------------------------------------------------------- property

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "datatype",
                    "shape",
                    "data",
                    "parameters",
                    "binary_data_size",
                    "inputs",
                    "outputs",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["INPUT0", "INPUT1", "IN_FP16", "IN_BYTES", "zz"]),
        "datatype": st.sampled_from(["INT32", "FP16", "BYTES", "BOOL", "UINT64", "nope"]),
        "shape": st.lists(st.integers(-2, 20), max_size=3),
    },
    optional={
        "data": _json_values,
        "parameters": st.fixed_dictionaries(
            {},
            optional={
                "binary_data_size": st.integers(-5, 100),
                "shared_memory_region": st.text(max_size=4),
                "shared_memory_byte_size": st.integers(-5, 100),
            },
        ),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    model=st.sampled_from(["simple", "identity", "small", "nope"]),
    header=st.one_of(
        st.fixed_dictionaries(
            {"inputs": st.lists(_tensor, max_size=3)},
            optional={"outputs": _json_values, "parameters": _json_values},
        ),
        _json_values,
    ),
    tail=st.binary(max_size=64),
    send_length=st.booleans(),
)
def test_random_http_bodies_never_fail_the_server(
    server: RunningServer, model: str, header: Any, tail: bytes, send_length: bool
) -> None:
    head = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))} if send_length else {}
    status, _ = post(server, f"/v2/models/{model}/infer", head + tail, headers)
    assert status < 500


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=200))
def test_random_bytes_never_fail_the_server(server: RunningServer, body: bytes) -> None:
    status, _ = post(server, "/v2/models/identity/infer", body)
    assert status < 500


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    model=st.sampled_from(["simple", "identity", "nope", ""]),
    version=st.sampled_from(["", "1", "2", "x"]),
    tensors=st.lists(
        st.tuples(
            st.sampled_from(["INPUT0", "INPUT1", "IN_BYTES", "IN_FP16", "q"]),
            st.sampled_from(["INT32", "BYTES", "FP16", "BOOL", "?"]),
            st.lists(st.integers(0, 20), max_size=3),
        ),
        max_size=3,
    ),
    raws=st.lists(st.binary(max_size=80), max_size=4),
    outputs=st.lists(st.sampled_from(["OUTPUT0", "OUT_BYTES", "x"]), max_size=2),
)
def test_random_grpc_requests_never_fail_the_server(
    server: RunningServer,
    model: str,
    version: str,
    tensors: list[tuple[str, str, list[int]]],
    raws: list[bytes],
    outputs: list[str],
) -> None:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raws)
    for name in outputs:
        request.outputs.add(name=name)
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(request, timeout=20)
        except grpc.RpcError as exc:
            assert exc.code() not in (
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.UNKNOWN,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ), exc.details()

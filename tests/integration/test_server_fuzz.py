"""A bounded fuzz run against a server process: raw HTTP requests, binary-tensor headers
and gRPC messages (valid-looking and not) never get a 5xx other than a 503 refusal, never
hang past the timeouts, never kill the server, and leave its memory where it was."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgetier.testing import ServerProcess, demo_repository

pytestmark = pytest.mark.integration

LIMIT_BYTES = 1 << 20
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 0.5
ANSWER_TIMEOUT_S = 20.0
"""Longer than any timeout of the server: a request still unanswered then hangs."""
RSS_SLACK_BYTES = 200 * 2**20
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


class Target:
    """The server under fuzz, and its memory when the fuzzing began."""

    def __init__(self, served: ServerProcess) -> None:
        self.served = served
        self.process = psutil.Process(served.pid)
        self.start_rss = 0

    def check(self) -> None:
        assert self.served.alive(), self.served.err[-3000:]
        grown = self.process.memory_info().rss - self.start_rss
        assert grown < RSS_SLACK_BYTES, f"server RSS grew {grown / 2**20:.0f} MiB"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    base = tmp_path_factory.mktemp("fuzz")
    repo = demo_repository(base / "repo", ("simple", "identity", "small"))
    options = [
        "--max-request-size-bytes",
        str(LIMIT_BYTES),
        "--http-header-timeout-s",
        str(HEADER_TIMEOUT_S),
        "--http-body-timeout-s",
        str(BODY_TIMEOUT_S),
    ]
    with ServerProcess(repo, base / "logs", *options) as served:
        fuzzed = Target(served)
        for body in (_simple_body(), _simple_body()):  # warm: every path taken once
            assert _http(served.http_port, _request("POST", "/v2/models/simple/infer", body))
        fuzzed.start_rss = fuzzed.process.memory_info().rss
        yield fuzzed
        fuzzed.check()


def _simple_body() -> bytes:
    tensors = [
        {"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
        for n in ("INPUT0", "INPUT1")
    ]
    return json.dumps({"inputs": tensors}).encode()


def _request(method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: fuzz", "Connection: close"]
    extra = dict(headers or {})
    extra.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _http(port: int, raw: bytes) -> int:
    """Send a raw request; the status of the answer (every request gets one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as sock:
        with contextlib.suppress(OSError):  # refused while still sending: read the answer
            sock.sendall(raw)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise AssertionError(f"no answer within {ANSWER_TIMEOUT_S} s: {raw[:200]!r}") from None
    assert data.startswith(b"HTTP/1.1 "), f"no HTTP answer to {raw[:200]!r}: {data[:200]!r}"
    return int(data.split()[1])


def _allowed(status: int) -> bool:
    return status < 500 or status == 503


def _mostly(draw: st.DrawFn, likely: Any, others: st.SearchStrategy[Any], percent: int) -> Any:
    """``likely`` in about ``percent`` % of the draws, else one of ``others``."""
    return likely if draw(st.integers(0, 99)) < percent else draw(others)


# ------------------------------------------------------------------- raw HTTP requests

_MODELS = st.sampled_from(["simple", "identity", "small", "nope", "", "%00", "..", "a" * 300])
_VERSIONS = st.sampled_from(["1", "2", "x", "%201", "-1", "99999999999999999999999", ""])
_PATHS = st.one_of(
    st.builds(lambda m: f"/v2/models/{m}/infer", _MODELS),
    st.builds(lambda m, v: f"/v2/models/{m}/versions/{v}/infer", _MODELS, _VERSIONS),
    st.builds(lambda m: f"/v2/models/{m}", _MODELS),
    st.builds(lambda m, a: f"/v2/models/{m}/{a}", _MODELS, st.sampled_from(["config", "stats"])),
    st.builds(lambda m: f"/v2/repository/models/{m}/load", _MODELS),
    st.builds(lambda r: f"/v2/systemsharedmemory/region/{r}/register", _MODELS),
    st.sampled_from(
        [
            "/v2",
            "/v2/health/ready",
            "/v2/repository/index",
            "/v2/models/stats",
            "/v2/systemsharedmemory/status",
            "/v2/cudasharedmemory/region/x/register",
            "/",
            "//v2//models",
        ]
    ),
    st.text(st.sampled_from("abv2/%.-_~?&=#"), max_size=40).map(lambda t: "/" + t),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=16,
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.just(_simple_body()),
    st.integers(0, 8 * LIMIT_BYTES).map(lambda n: gzip.compress(bytes(n), 1)),  # bombs too
    st.binary(max_size=100).map(zlib.compress),
)


@st.composite
def _raw_requests(draw: st.DrawFn) -> bytes:
    method = _mostly(draw, "POST", st.sampled_from(["GET", "PUT", "DELETE", "HEAD", "BREW"]), 60)
    model = draw(st.sampled_from(["simple", "identity", "small"]))
    path = _mostly(draw, f"/v2/models/{model}/infer", _PATHS, 50)
    body = draw(_BODIES)
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["Content-Encoding"] = draw(
            st.sampled_from(["gzip", "deflate", "identity", "br", "x" * 50])
        )
    if draw(st.booleans()):
        headers["Inference-Header-Content-Length"] = draw(
            st.one_of(st.integers(-5, len(body) + 10).map(str), st.sampled_from(["x", "1e3"]))
        )
    kinds = ["shorter", "longer", "junk", "huge", "chunked"]
    length = _mostly(draw, "exact", st.sampled_from(kinds), 75)
    if length == "shorter":
        headers["Content-Length"] = str(max(0, len(body) - 7))
    elif length == "longer":  # the body never comes: the body timeout answers
        headers["Content-Length"] = str(len(body) + 100)
    elif length == "junk":
        headers["Content-Length"] = "12abc"
    elif length == "huge":
        headers["Content-Length"] = str(10**30)
    elif length == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        headers["Content-Length"] = ""
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    raw = _request(method, path, body, headers)
    if length == "chunked":
        raw = raw.replace(b"Content-Length: \r\n", b"")
    return raw


@FUZZ
@given(raw=_raw_requests())
def test_raw_http_requests(target: Target, raw: bytes) -> None:
    status = _http(target.served.http_port, raw)
    assert _allowed(status), (status, raw[:300])
    target.check()


# -------------------------------------------------------------- binary tensor headers

_DTYPES = st.sampled_from(["INT32", "FP32", "FP16", "BYTES", "BOOL", "UINT8", "INT64", "x"])
_DIMS = st.one_of(st.integers(0, 20), st.sampled_from([2**28, 2**31, 2**40, 2**62, 2**64, -1]))
_INPUTS = {  # the demo models' inputs and their datatypes
    "simple": {"INPUT0": "INT32", "INPUT1": "INT32"},
    "small": {"input": "FP32"},
    "identity": {f"IN_{t}": t for t in ("BYTES", "FP32", "UINT8", "BOOL", "FP16", "INT64")},
}


@st.composite
def _header(draw: st.DrawFn, model: str) -> tuple[str, str, list[int]]:
    """An input's name, datatype and shape: mostly right, with claims of any size."""
    names = list(_INPUTS[model])
    name = _mostly(draw, names[0], st.sampled_from([*names, "zz"]), 40)  # BYTES, for identity
    right = _INPUTS[model].get(name, "FP32")
    datatype = _mostly(draw, right, _DTYPES, 75)
    batch = _mostly(draw, 1, st.sampled_from([2, 0, 9, 2**40]), 70)
    tail = draw(st.one_of(st.lists(_DIMS, min_size=1, max_size=1), st.lists(_DIMS, max_size=3)))
    return name, datatype, [batch, *tail]


@st.composite
def _tensor_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    model = draw(st.sampled_from(["simple", "identity", "identity", "small"]))
    inputs = []
    tail = b""
    for _ in range(draw(st.integers(0, 3))):
        params: dict[str, Any] = {}
        data = draw(st.binary(max_size=200))
        if draw(st.integers(0, 9)) < 7:
            params["binary_data_size"] = _mostly(draw, len(data), st.integers(-3, 2**40), 70)
            tail += data
        if draw(st.integers(0, 5)) == 0:
            params["shared_memory_region"] = draw(st.text(max_size=5))
            params["shared_memory_byte_size"] = draw(st.integers(-1, 2**40))
        name, datatype, shape = draw(_header(model))
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if params or draw(st.booleans()):
            tensor["parameters"] = params
        else:
            tensor["data"] = draw(_JSON)
        inputs.append(tensor)
    header: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        outputs = draw(
            st.lists(st.sampled_from(["OUTPUT0", "OUT_BYTES", "output", "q"]), max_size=4)
        )
        header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    if draw(st.booleans()):
        header["parameters"] = draw(
            st.dictionaries(
                st.sampled_from(["priority", "timeout", "binary_data_output", "x"]),
                st.one_of(st.integers(-1, 2**64), st.booleans(), st.text(max_size=3)),
            )
        )
    head = json.dumps(header).encode()
    tail += draw(st.binary(max_size=16))
    declared = _mostly(draw, len(head), st.integers(0, len(head) + len(tail) + 5), 80)
    return model, head + tail, {"Inference-Header-Content-Length": str(declared)}


@FUZZ
@given(request=_tensor_requests())
def test_binary_tensor_requests(target: Target, request: tuple[str, bytes, dict[str, str]]) -> None:
    model, body, headers = request
    status = _http(
        target.served.http_port, _request("POST", f"/v2/models/{model}/infer", body, headers)
    )
    assert _allowed(status), (status, body[:300])
    target.check()


# ------------------------------------------------------------------------------ gRPC

_FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


@st.composite
def _grpc_requests(draw: st.DrawFn) -> Any:
    model = draw(st.sampled_from(["simple", "identity", "identity", "small", "nope"]))
    request = service_pb2.ModelInferRequest(
        model_name=model,
        model_version=draw(st.sampled_from(["", "1", "2", "1 ", "x", "\u0661"])),
        id=draw(st.text(max_size=4)),
    )
    for _ in range(draw(st.integers(0, 3))):
        name, datatype, shape = draw(_header(model if model in _INPUTS else "small"))
        if any(d < 0 or d >= 2**63 for d in shape):
            shape = [1, 16]  # protobuf's int64 field cannot carry those
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        choice = draw(st.integers(0, 3))
        if choice == 1:
            tensor.contents.int_contents.extend(draw(st.lists(st.integers(-5, 5), max_size=40)))
        elif choice == 2:
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=5), max_size=5)))
        elif choice == 3:
            tensor.parameters["shared_memory_region"].string_param = draw(st.text(max_size=4))
            tensor.parameters["shared_memory_byte_size"].int64_param = draw(st.integers(-1, 2**40))
    for raw in draw(st.lists(st.binary(max_size=200), max_size=4)):
        request.raw_input_contents.append(raw)
    for name in draw(st.lists(st.sampled_from(["OUTPUT0", "OUTPUT1", "output", "x"]), max_size=3)):
        request.outputs.add(name=name)
    for key in draw(st.lists(st.sampled_from(["priority", "timeout", "x"]), max_size=2)):
        kind = draw(st.sampled_from(["int64_param", "bool_param", "string_param"]))
        value: Any = {"int64_param": draw(st.integers(-1, 2**40)), "bool_param": True}.get(
            kind, "s"
        )
        setattr(request.parameters[key], kind, value)
    return request


@pytest.fixture(scope="module")
def channel(target: Target) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target.served.grpc_url) as opened:
        yield opened


def _grpc_code(call: Any, message: Any) -> grpc.StatusCode:
    try:
        call(message, timeout=ANSWER_TIMEOUT_S)
    except grpc.RpcError as exc:
        assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "no answer in time"
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@FUZZ
@given(request=_grpc_requests())
def test_grpc_messages(target: Target, channel: grpc.Channel, request: Any) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    code = _grpc_code(stub.ModelInfer, request)
    assert code not in _FORBIDDEN, (code, request)
    target.check()


@FUZZ
@given(payload=st.binary(max_size=300))
def test_grpc_bytes_that_are_not_messages(
    target: Target, channel: grpc.Channel, payload: bytes
) -> None:
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    assert _grpc_code(call, payload) not in _FORBIDDEN
    stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    for answer in stream(iter([payload, payload]), timeout=ANSWER_TIMEOUT_S):
        assert answer  # each message gets its own (error) response; the stream lives
    target.check()

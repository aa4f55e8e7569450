"""Idle and stalled connections end, and none exhausts the server: HTTP header, body and
keep-alive timeouts, a header cap, a connection cap; gRPC's idle, handshake, keepalive
and connection limits. Raw sockets, as a misbehaving client would use them."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient

from edgetier.testing import RunningServer, ServerProcess, demo_repository, running_server

pytestmark = pytest.mark.integration

LIMITS = {
    "http_header_timeout_s": 0.5,
    "http_body_timeout_s": 0.5,
    "http_keepalive_timeout_s": 0.5,
    "http_max_header_bytes": 4096,
    "http_max_connections": 8,
    "grpc_max_connection_idle_s": 1.0,
    "grpc_handshake_timeout_s": 0.3,
    "grpc_max_connections": 4,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = demo_repository(tmp_path_factory.mktemp("limits") / "repo", ("simple", "identity"))
    with running_server(repo, **LIMITS) as running:
        yield running


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def parse(response: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def server_sockets(port: int) -> int:
    """Connections the (in-process) server holds on its HTTP port."""
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def eventually(check: object, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /v2/models/simple/inf", b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-A"],
    ids=["nothing", "half a request line", "half the headers"],
)
def test_a_request_without_its_headers_gets_408_and_is_closed(
    server: RunningServer, sent: bytes
) -> None:
    with connect(server.server.http_port) as sock:
        sock.sendall(sent)
        status, headers, body = parse(read_all(sock))
    assert status == 408 and headers["connection"] == "close"
    assert "--http-header-timeout-s" in str(body["error"])


def test_a_stalled_body_gets_408_with_the_json_error(server: RunningServer) -> None:
    with connect(server.server.http_port) as sock:
        sock.sendall(
            b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
            b'{"inputs": ['
        )
        status, headers, body = parse(read_all(sock))
    assert status == 408 and headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert "body stopped arriving" in str(body["error"])


def test_an_idle_keep_alive_connection_is_closed(server: RunningServer) -> None:
    with connect(server.server.http_port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        assert read_all(sock) == b""  # closed by the server, without a word


def test_endless_headers_get_431(server: RunningServer) -> None:
    with connect(server.server.http_port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        status = 0
        try:
            for _ in range(100):
                sock.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
        except OSError:
            pass  # the server closed while we were still sending
        status, _headers, body = parse(read_all(sock))
    assert status == 431 and "--http-max-header-bytes" in str(body["error"])


def test_connections_over_the_cap_are_refused_with_503(server: RunningServer) -> None:
    port = server.server.http_port
    assert eventually(lambda: server_sockets(port) == 0)
    held = [connect(port) for _ in range(LIMITS["http_max_connections"])]  # type: ignore[arg-type]
    try:
        assert eventually(lambda: server_sockets(port) == len(held))
        with connect(port) as extra:
            status, headers, body = parse(read_all(extra))
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert "--http-max-connections" in str(body["error"])
    finally:
        for sock in held:
            sock.close()
    # the held ones gone, a new client is served
    assert eventually(lambda: server_sockets(port) == 0)
    with connect(port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200")


def test_a_client_that_stops_reading_its_responses_is_dropped(server: RunningServer) -> None:
    port = server.server.http_port
    assert eventually(lambda: server_sockets(port) == 0)
    sock = connect(port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # 1,000 pipelined requests whose answers (megabytes) the client never reads
        sock.sendall(b"GET /v2/models/identity/config HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
        assert eventually(lambda: server_sockets(port) == 0)
    finally:
        sock.close()


# --------------------------------------------------------------------------- gRPC

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY = 4, 6, 7


def frame(kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + bytes(4) + payload


def frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """HTTP/2 frames (kind, payload) until the connection closes."""
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            size = int.from_bytes(buffer[:3], "big")
            yield buffer[3], buffer[9 : 9 + size]
            buffer = buffer[9 + size :]


def goaway(sock: socket.socket) -> bytes:
    """The GOAWAY frame's error code and debug text."""
    for kind, payload in frames(sock):
        if kind == GOAWAY:
            return payload[4:]
    raise AssertionError("connection closed without GOAWAY")


def test_grpc_announces_its_stream_limit_and_closes_idle_connections(
    server: RunningServer,
) -> None:
    with connect(server.server.grpc_port) as sock:
        sock.sendall(PREFACE + frame(SETTINGS))
        kind, payload = next(frames(sock))
        assert kind == SETTINGS
        settings = {
            int.from_bytes(payload[i : i + 2], "big"): int.from_bytes(payload[i + 2 : i + 6], "big")
            for i in range(0, len(payload), 6)
        }
        assert settings[3] == 1024  # SETTINGS_MAX_CONCURRENT_STREAMS, the default
        assert b"connection idle" in goaway(sock)


def test_grpc_closes_a_connection_that_never_speaks_http2(server: RunningServer) -> None:
    with connect(server.server.grpc_port) as sock:
        assert b"before handshake timeout" in goaway(sock)


def test_grpc_enforces_keepalive_policy(server: RunningServer) -> None:
    with connect(server.server.grpc_port) as sock:
        sock.sendall(PREFACE + frame(SETTINGS))
        for _ in range(5):  # pings without calls, far more often than allowed
            sock.sendall(frame(PING, bytes(8)))
        code = goaway(sock)
        assert code[:4] == bytes([0, 0, 0, 0x0B]) and b"too_many_pings" in code


def test_grpc_refuses_connections_over_its_cap(server: RunningServer) -> None:
    held = []
    try:
        for _ in range(LIMITS["grpc_max_connections"] + 3):  # type: ignore[operator]
            sock = connect(server.server.grpc_port)
            sock.sendall(PREFACE + frame(SETTINGS))
            held.append(sock)
        first = next(frames(held[0]))  # served: the server's SETTINGS
        assert first[0] == SETTINGS
        assert list(frames(held[-1])) == []  # over the cap: closed at once
    finally:
        for sock in held:
            sock.close()


# --------------------------------------------------------------- 20,000 idle sockets


def test_idle_connections_cannot_exhaust_the_server(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple",))
    options = [
        "--http-max-connections",
        "50",
        "--grpc-max-connections",
        "50",
        "--http-header-timeout-s",
        "1",
        "--grpc-handshake-timeout-s",
        "1",
    ]
    with ServerProcess(repo, tmp_path / "logs", *options) as served:
        process = psutil.Process(served.pid)
        baseline = process.num_fds()
        idle: list[socket.socket] = []
        try:
            for port in (served.http_port, served.grpc_port):
                for _ in range(400):
                    try:
                        idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                    except OSError:
                        break
            time.sleep(0.3)
            # at most the caps are held, whatever the clients opened
            assert process.num_fds() <= baseline + 50 + 50 + 10
            # once the idle ones timed out, new clients are served on both protocols
            assert eventually(lambda: served.get("/v2/health/ready")[0] == 200)
            client = grpcclient.InferenceServerClient(served.grpc_url)
            tensors = [grpcclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
            for tensor in tensors:
                tensor.set_data_from_numpy(np.ones((1, 16), np.int32))
            assert client.infer("simple", tensors).as_numpy("OUTPUT0").sum() == 32
            assert served.alive()
        finally:
            for sock in idle:
                sock.close()

"""A live inference server for tests: a demo repository and a server on free ports, in a
thread of the test's process (``running_server``) or as a child process (``ServerProcess``).

``running_server`` runs the server in a thread with its own event loop, so that
synchronous clients (tritonclient's) can call it from the test::

    with running_server(demo_repository(tmp_path / "repo")) as server:
        client = InferenceServerClient(server.grpc_url)
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from edgetier.errors import StartupError

__all__ = [
    "DEMO",
    "RunningServer",
    "ServerProcess",
    "demo_repository",
    "edit_config",
    "read_http_response",
    "running_server",
]

DEMO = ("simple", "small", "identity")
"""The demo models the server tests use by default (the cheap ones)."""

START_TIMEOUT_S = 60.0
_CACHE: dict[str, Path] = {}


def demo_repository(base: Path, models: tuple[str, ...] = DEMO) -> Path:
    """A fresh copy of the demo models under ``base`` (built once per test session)."""
    from edgetier.synthetic import build_demo_repository

    key = ",".join(models)
    if key not in _CACHE:
        built = base.parent / f"demo-{len(_CACHE)}"
        build_demo_repository(built, models=list(models))
        _CACHE[key] = built
    shutil.copytree(_CACHE[key], base, dirs_exist_ok=True)
    return base


def edit_config(repo: Path, model: str, **fields: Any) -> None:
    """Change fields of a model's config.yaml."""
    path = repo / model / "config.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    data.update(fields)
    path.write_text(yaml.safe_dump(data))


class RunningServer:
    """An InferenceServer running in a background thread."""

    def __init__(self, server: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.server.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.metrics_port}/metrics"

    def call(self, coro: Any, timeout_s: float = 30) -> Any:
        """Run a coroutine on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)


@contextmanager
def running_server(
    repo: Path, *, start_timeout_s: float = START_TIMEOUT_S, **settings: Any
) -> Iterator[RunningServer]:
    """Start a server on ``repo`` (ports 0 unless given) and stop it at the end.

    Raises StartupError, with the reason, when the server fails to start (a port in use,
    a bad setting) or is not serving within ``start_timeout_s``.
    """
    from edgetier.server import InferenceServer, ServerSettings

    options: dict[str, Any] = {"http_port": 0, "grpc_port": 0, "metrics_port": 0}
    options.update(settings)
    server = InferenceServer(ServerSettings(model_repository=repo, **options))
    started = threading.Event()
    failure: list[BaseException] = []
    holder: list[asyncio.AbstractEventLoop] = []

    def main() -> None:
        async def serve() -> None:
            holder.append(asyncio.get_running_loop())
            try:
                await server.start()
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            await server.wait_closed()

        asyncio.run(serve())

    thread = threading.Thread(target=main, name="edgetier-test-server", daemon=True)
    thread.start()
    if not started.wait(start_timeout_s):
        raise StartupError(f"the server on {repo} did not start within {start_timeout_s} s")
    if failure:
        thread.join(10)
        exc = failure[0]
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        raise StartupError(f"the server on {repo} failed to start: {reason}") from exc
    running = RunningServer(server, holder[0])
    try:
        yield running
    finally:
        running.call(server.stop(), timeout_s=60)
        thread.join(30)


class ServerProcess:
    """``edgetier serve`` as a child process on free ports, for tests and benchmarks that
    need a real process: one a signal may kill, that gets SIGTERM, or whose memory and
    descriptors are counted. stdout and stderr go to files in ``logs``::

        with ServerProcess(repo, tmp_path / "logs", "--no-strict-readiness") as served:
            status, body = served.get("/v2/health/ready")

    It is started once the server logs ``serving`` (startup finished), or, at a log level
    above INFO, once both listeners answer (HTTP ``/v2/health/live``); with
    ``wait_ready`` also once ``/v2/health/ready`` answers 200. A server that exits or does
    not start in time raises StartupError with the end of its log.
    """

    def __init__(
        self,
        repo: Path,
        logs: Path,
        *options: str,
        metrics: bool = False,
        wait_ready: bool = False,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        from edgetier.testing._ports import free_port

        self.http_port, self.grpc_port = free_port(), free_port()
        self.metrics_port: int | None = free_port() if metrics else None
        self.logs = Path(logs)
        self.out_path, self.err_path = self.logs / "serve.out", self.logs / "serve.err"
        self.wait_ready = wait_ready
        self.start_timeout_s = start_timeout_s
        self.args = [
            str(Path(sys.executable).with_name("edgetier")),
            "serve",
            "--model-repository",
            str(repo),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port if self.metrics_port is not None else -1),
            *options,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        level = options[options.index("--log-level") + 1] if "--log-level" in options else ""
        self._logs_info = level.lower() not in ("warning", "error")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server is not started"
        return self.proc.pid

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def url(self, protocol: str) -> str:
        """``grpc://127.0.0.1:PORT`` or ``http://127.0.0.1:PORT``."""
        port = self.grpc_port if protocol == "grpc" else self.http_port
        return f"{protocol}://127.0.0.1:{port}"

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def start(self) -> ServerProcess:
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err)
        deadline = time.monotonic() + self.start_timeout_s
        while not self._started():
            if self.proc.poll() is not None:
                raise StartupError(
                    f"edgetier serve exited with {self.proc.returncode}:\n{self.err[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise StartupError(
                    f"edgetier serve did not start in {self.start_timeout_s} s:\n{self.err[-2000:]}"
                )
            time.sleep(0.1)
        return self

    def _started(self) -> bool:
        if self._logs_info:  # logged once startup has finished (readiness then holds)
            if "serving " not in self.err:
                return False
        elif self.get("/v2/health/live")[0] != 200:
            return False
        try:  # the gRPC listener too
            socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1).close()
        except OSError:
            return False
        return not self.wait_ready or self.get("/v2/health/ready")[0] == 200

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str) -> tuple[int, bytes]:
        """GET on a new connection: (status, body), or (0, b"") when nothing answers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def metrics_text(self) -> str:
        """The Prometheus endpoint's text (the server must run with ``metrics=True``)."""
        if self.metrics_port is None:
            raise StartupError("this server was started without metrics (metrics=True)")
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return str(answer.read().decode())

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (a drain), then wait for the exit status."""
        assert self.proc is not None, "the server is not started"
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM and wait; SIGKILL when it has not ended by then."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.terminate(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def read_http_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """One HTTP response (with Content-Length) from a raw socket: status, headers (lower
    case), and the body as JSON (None when empty). For tests that speak HTTP by hand."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None

"""`edgetier serve` as a child process, for the tests that need a real process: one that
may crash (a signal kills it), that gets SIGTERM, or whose descriptors are counted."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from edgetier.testing import free_port

START_TIMEOUT_S = 60.0


class ServeProcess:
    """``edgetier serve`` on free ports; its stdout and stderr go to files in ``logs``."""

    def __init__(self, repo: Path, logs: Path, *options: str) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / "serve.out", logs / "serve.err"
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
            "-1",
            *options,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def __enter__(self) -> ServeProcess:
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT_S
        # started: it logs "serving <repository>: HTTP ..." once every listener is open
        while "serving " not in self.err:
            if self.proc.poll() is not None:
                raise AssertionError(f"edgetier serve exited {self.proc.returncode}: {self.err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"edgetier serve did not start: {self.err}")
            time.sleep(0.1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

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

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then wait for the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """One HTTP response (with Content-Length) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None

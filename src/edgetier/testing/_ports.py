"""Free ports on 127.0.0.1 and waiting for a listener: the one place tests and benchmarks
get their ports from.

    port = free_port()
    wait_for_port(port, timeout_s=10)
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

from edgetier.errors import StartupError

__all__ = ["free_port", "free_tcp_block", "free_udp_range", "wait_for_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the system picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_range(count: int) -> int:
    """A base port such that base .. base+count-1 are free UDP ports on 127.0.0.1."""
    return _free_block(count, socket.SOCK_DGRAM, "UDP")


def free_tcp_block(count: int) -> int:
    """A base port such that base .. base+count-1 are free TCP ports on 127.0.0.1 (for a
    program that takes a port base, as ``edgetier agent --port-base`` does)."""
    return _free_block(count, socket.SOCK_STREAM, "TCP")


def _free_block(count: int, kind: socket.SocketKind, name: str) -> int:
    for _ in range(200):
        base = random.randrange(20_000, 60_000 - count, 10)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, kind)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise StartupError(f"no {count} consecutive free {name} ports on 127.0.0.1")


def wait_for_port(
    port: int,
    *,
    timeout_s: float,
    host: str = "127.0.0.1",
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Wait until something accepts TCP connections on ``port``.

    ``alive`` returns None while the process behind the port still runs, or a reason when
    it has died; waiting then stops at once with that reason. Raises TimeoutError naming
    the port and the time waited.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            reason = alive() if alive is not None else None
            if reason is not None:
                raise StartupError(reason) from None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listened on {host}:{port} within {timeout_s} s"
                ) from None
            time.sleep(0.05)


def eventually(check: Callable[[], object], timeout_s: float = 20.0, every_s: float = 0.05) -> bool:
    """Poll ``check`` until it returns something true or ``timeout_s`` passes; whether it
    did (tests assert on it, so a timeout reads as the check that failed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return False

"""A live inference server for tests: a demo repository and a server on free ports.

The server runs in a thread with its own event loop, so that synchronous clients
(tritonclient's) can call it from the test::

    with running_server(demo_repository(tmp_path / "repo")) as server:
        client = InferenceServerClient(server.grpc_url)
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from edgetier.errors import StartupError

__all__ = ["DEMO", "RunningServer", "demo_repository", "edit_config", "running_server"]

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

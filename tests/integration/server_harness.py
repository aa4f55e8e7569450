"""Helpers for the server integration tests: a demo repository and a live server.

The server runs in a thread with its own event loop, so the sync tritonclient clients of
the tests can call it; every port is picked by the system (port 0).
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

from edgetier.runtime import build_demo_repository
from edgetier.server import InferenceServer, ServerSettings

DEMO = ("simple", "small", "identity")
_CACHE: dict[str, Path] = {}


def demo_repository(base: Path, models: tuple[str, ...] = DEMO) -> Path:
    """A fresh copy of the demo models under ``base`` (built once per test session)."""
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
    data = yaml.safe_load(path.read_text())
    data.update(fields)
    path.write_text(yaml.safe_dump(data))


class RunningServer:
    """An InferenceServer running in a background thread."""

    def __init__(self, server: InferenceServer, loop: asyncio.AbstractEventLoop) -> None:
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
def running_server(repo: Path, **settings: Any) -> Iterator[RunningServer]:
    """Start a server on ``repo`` (ports 0) and stop it at the end."""
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
    started.wait(60)
    if failure:
        thread.join(10)
        raise failure[0]
    running = RunningServer(server, holder[0])
    try:
        yield running
    finally:
        running.call(server.stop(), timeout_s=60)
        thread.join(30)

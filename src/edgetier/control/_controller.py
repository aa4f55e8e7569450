"""Running the controller: the service, its API under uvicorn, and the reconcile loop.

``edgetier controller`` runs :meth:`Controller.run` in the foreground; tests and
``edgetier up`` may run it in a thread of their own process::

    controller = Controller(ControllerSettings(data_dir=tmp, port=free_port()))
    with controller.running():            # returns once it listens
        httpx.get(controller.url + "/healthz")
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn
from sqlalchemy.engine import make_url

from edgetier.control._api import create_app
from edgetier.control._notify import DesiredNotifier
from edgetier.control._scheduler import PlacementPolicy
from edgetier.control._service import OPERATOR_TOKEN_FILE, ControlService
from edgetier.control._settings import ControllerSettings
from edgetier.errors import StartupError

__all__ = ["Controller"]


class _Server(uvicorn.Server):
    """uvicorn's server that, when told to stop, first releases the parked long polls
    (each answers at once), so that shutdown does not wait for them; SIGTERM and SIGINT
    end it with exit status 0 (uvicorn would raise the signal again once stopped)."""

    def __init__(self, config: uvicorn.Config, notifier: DesiredNotifier) -> None:
        super().__init__(config)
        self.notifier = notifier

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # a thread of a test or of `edgetier up`: its owner stops it
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.notifier.close_threadsafe()
        super().handle_exit(sig, frame)


class Controller:
    def __init__(
        self, settings: ControllerSettings, *, policy: PlacementPolicy | None = None
    ) -> None:
        self.settings = settings
        self.service = ControlService(settings, policy=policy)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        port = self.settings.port
        if self._server is not None and self._server.servers:
            port = self._server.servers[0].sockets[0].getsockname()[1]
        host = self.settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{port}"

    @property
    def operator_token_file(self) -> str:
        return str(self.settings.data_dir / OPERATOR_TOKEN_FILE)

    def _make_server(self) -> _Server:
        self.service.start()
        config = uvicorn.Config(
            create_app(self.service),
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        self._server = _Server(config, self.service.notifier)
        return self._server

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (this process is the controller's: see _tune_gc)."""
        server = self._make_server()
        _tune_gc()
        try:
            server.run()
        finally:
            self.service.close()
        if not server.started:
            raise StartupError(
                f"the controller could not listen on {self.settings.host}:{self.settings.port}"
            )

    @contextlib.contextmanager
    def running(self, *, timeout_s: float = 20.0) -> Iterator[Controller]:
        """Serve from a thread of this process for the duration of the block."""
        server = self._make_server()
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                server.run()
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)

        self._thread = threading.Thread(target=serve, name="edgetier-controller", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if errors or not self._thread.is_alive():
                raise StartupError(f"the controller did not start: {errors[:1] or 'exited'}")
            if time.monotonic() > deadline:
                raise StartupError(f"the controller did not listen within {timeout_s} s")
            time.sleep(0.02)
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self.service.notifier.close_threadsafe()
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        self.service.close()

    def _notices(self) -> str:
        notices = self.service.notices
        if notices is None:
            return "long poll only (no --mqtt)"
        return f"{notices.broker} (edgetier/v1/nodes/<node>/desired) and the long poll"

    def banner(self) -> str:
        url = self.url
        return "\n".join(
            [
                f"edgetier controller listening on {url}",
                f"  dashboard:       {url}/ui   (sign in with the operator token)",
                f"  API docs:        {url}/docs   (schema: {url}/openapi.json)",
                f"  metrics:         {url}/metrics",
                f"  events:          {url}/v1/events",
                f"  database:        {_shown(self.settings.url)}",
                f"  replica:         {self.service.replica} (leads the background passes: "
                f"{'always' if self.service.db.is_sqlite else 'when it holds the lock'})",
                f"  operator token:  {self.operator_token_file}",
                f"  node timeout:    {self.settings.node_timeout_s:g} s",
                f"  change notices:  {self._notices()}",
            ]
        )


def _shown(url: str) -> str:
    """A database URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


GC_THRESHOLDS = (20_000, 20, 100)
"""The collector's thresholds in a controller process (Python's default: 700, 10, 10)."""


def _tune_gc() -> None:
    """Keep the cyclic garbage collector from stopping the controller.

    A full collection walks every object the collector tracks, with the GIL held: serving
    a thousand nodes (their parked long polls, connections, the ORM's caches) that is
    some 300,000 objects and 120-350 ms, and with Python's default thresholds it came
    every few seconds, so that every request in flight waited for it (the operator API's
    p99 was those pauses). What is alive once the controller has started (modules, the
    ORM's and pydantic's machinery) never becomes garbage: :func:`gc.freeze` takes it out
    of the collector's sight; and the young generation is collected every 20,000
    allocations instead of 700, so that a request's short-lived objects are gone before
    a collection sees them and few reach the old generations. Only for a process that is
    the controller (``Controller.run``): these settings are process-wide."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

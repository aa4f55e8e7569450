"""InferenceServer: HTTP (uvicorn + httptools), gRPC (grpc.aio) and metrics in one loop.

async with InferenceServer(ServerSettings(model_repository="models", http_port=0)) as s:
    print(s.http_port, s.grpc_port, s.metrics_port)
    await s.wait_closed()          # until stop() is called elsewhere
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any

import grpc
import uvicorn

from edgetier.errors import ConfigError, EdgeTierError
from edgetier.runtime import ModelRepository
from edgetier.server._backend import Backend
from edgetier.server._grpc import GrpcService, add_to_server
from edgetier.server._http import HttpApp
from edgetier.server._manager import ModelManager
from edgetier.server._metrics import MetricsApp, build_registry
from edgetier.server._protocol import HttpLimits, protocol_class
from edgetier.server._settings import ServerSettings
from edgetier.server._shm import SharedMemoryRegistry

log = logging.getLogger("edgetier.server")


class _Uvicorn(uvicorn.Server):
    """uvicorn inside our loop: signals are the owner's business, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


_FD_HEADROOM = 512
"""Descriptors beyond the connection caps: models, shared-memory regions, logs, threads."""


def _raise_fd_limit(needed: int) -> None:
    """Raise the soft limit on open files toward ``needed`` (as far as the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "open-file limit %d is below the %d the connection caps need "
            "(--http-max-connections + --grpc-max-connections + %d): lower the caps or "
            "raise the limit (ulimit -n)",
            target,
            needed,
            _FD_HEADROOM,
        )


def _grpc_options(s: ServerSettings) -> list[tuple[str, int]]:
    """gRPC core's channel arguments for the server's limits (see docs/server.md)."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.max_receive_message_length", s.max_request_size_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
        ("grpc.max_allowed_incoming_connections", s.grpc_max_connections),
        ("grpc.max_concurrent_streams", s.grpc_max_concurrent_streams),
        ("grpc.server_handshake_timeout_ms", ms(s.grpc_handshake_timeout_s)),
        ("grpc.keepalive_time_ms", ms(s.grpc_keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(s.grpc_keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(s.grpc_min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if s.grpc_max_connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", ms(s.grpc_max_connection_idle_s)))
    if s.grpc_max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", ms(s.grpc_max_connection_age_s)))
        options.append(("grpc.max_connection_age_grace_ms", ms(s.grpc_max_connection_age_grace_s)))
    return options


class InferenceServer:
    """The inference node's servers over one model repository.

    ``collectors`` are extra Prometheus collectors (e.g. edgetier.hardware's telemetry)
    served on the metrics port beside the model metrics.
    """

    def __init__(
        self,
        settings: ServerSettings,
        *,
        collectors: Iterable[Any] = (),
        repository: ModelRepository | None = None,
    ) -> None:
        self.settings = settings
        self._collectors = list(collectors)
        self._repository = repository
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port: int | None = None
        self.manager: ModelManager | None = None
        self.backend: Backend | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: list[tuple[_Uvicorn, asyncio.Task[None]]] = []
        self._stopped = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        """Load the models, then open the HTTP, gRPC and metrics ports."""
        s = self.settings
        repository = self._repository or ModelRepository(s.model_repository)
        self.manager = ModelManager(
            repository,
            mode=s.model_control_mode,
            startup_models=list(s.load_models),
            poll_interval_s=s.repository_poll_secs,
        )
        shm = SharedMemoryRegistry(max_read_bytes=s.max_request_size_bytes)
        self.backend = backend = Backend(self.manager, shm, strict_readiness=s.strict_readiness)
        self._stopped.clear()
        self._started = True
        _raise_fd_limit(s.http_max_connections + s.grpc_max_connections + _FD_HEADROOM)
        try:
            await self.manager.start()
            self._grpc = grpc.aio.server(options=_grpc_options(s))
            add_to_server(GrpcService(backend), self._grpc)
            address = f"[{s.host}]:{s.grpc_port}" if ":" in s.host else f"{s.host}:{s.grpc_port}"
            try:
                self.grpc_port = self._grpc.add_insecure_port(address)
            except RuntimeError as exc:
                raise ConfigError(f"cannot listen on {address} for gRPC: {exc}") from None
            await self._grpc.start()
            self.http_port = await self._serve_http(
                HttpApp(
                    backend,
                    max_request_size_bytes=s.max_request_size_bytes,
                    body_timeout_s=s.http_body_timeout_s,
                ),
                s.http_port,
            )
            if s.metrics_port is not None:
                registry = build_registry(self.manager, self._collectors)
                self.metrics_port = await self._serve_http(
                    MetricsApp(self.manager, registry), s.metrics_port
                )
        except BaseException:
            await self.stop()
            raise
        backend.started = True
        log.info(
            "serving %s: HTTP %s:%d, gRPC %s:%d, metrics %s",
            s.model_repository,
            s.host,
            self.http_port,
            s.host,
            self.grpc_port,
            f"{s.host}:{self.metrics_port}" if self.metrics_port is not None else "off",
        )

    async def _serve_http(self, app: Any, port: int) -> int:
        s = self.settings
        sock = _bind(s.host, port)
        limits = HttpLimits(
            header_timeout_s=s.http_header_timeout_s,
            send_timeout_s=s.http_body_timeout_s,
            keepalive_timeout_s=s.http_keepalive_timeout_s,
            max_header_bytes=s.http_max_header_bytes,
            max_connections=s.http_max_connections,
        )
        config = uvicorn.Config(
            app,
            http=protocol_class(limits),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            proxy_headers=False,
            timeout_keep_alive=s.http_keepalive_timeout_s,  # type: ignore[arg-type]
            timeout_graceful_shutdown=max(1, int(s.drain_timeout_s)),
            backlog=2048,
        )
        server = _Uvicorn(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="edgetier-http")
        while not server.started:
            if task.done():
                task.result()
                raise EdgeTierError(f"HTTP server on port {port} stopped while starting")
            await asyncio.sleep(0.01)
        self._http.append((server, task))
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Drain, then close the listeners and unload the models.

        Readiness turns false first and new requests get 503 with Retry-After (on the
        listeners, still open, so a client is told rather than refused a connection);
        the requests in flight finish, up to ``drain_timeout_s`` (a stalled upload ends
        at its body timeout); then the listeners close.
        """
        if not self._started:
            return
        self._started = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout_s
        backend = self.backend
        if backend is not None and backend.started:
            backend.draining = True
            if backend.active:
                log.info("draining: %d requests in flight", backend.active)
            while backend.active and loop.time() < deadline:
                await asyncio.sleep(0.02)
            if backend.active:
                log.warning(
                    "drain timeout (%g s): cancelling %d requests in flight",
                    self.settings.drain_timeout_s,
                    backend.active,
                )
        grace = max(0.1, deadline - loop.time())
        waits: list[Any] = []
        for server, _ in self._http:
            server.config.timeout_graceful_shutdown = grace  # type: ignore[assignment]
            server.should_exit = True
        if self._grpc is not None:
            waits.append(self._grpc.stop(grace))
        waits.extend(task for _, task in self._http)
        results = await asyncio.gather(*waits, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.warning("error while stopping a listener: %s", result)
        self._http.clear()
        self._grpc = None
        if self.manager is not None:
            await self.manager.stop()
        if self.backend is not None:
            self.backend.shm.close()
        self._stopped.set()
        log.info("server stopped")

    async def wait_closed(self) -> None:
        """Wait until stop() has finished."""
        await self._stopped.wait()

    async def __aenter__(self) -> InferenceServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

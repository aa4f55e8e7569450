"""InferenceServer: HTTP (uvicorn + httptools), gRPC (grpc.aio) and metrics in one loop.

async with InferenceServer(ServerSettings(model_repository="models", http_port=0)) as s:
    print(s.http_port, s.grpc_port, s.metrics_port)
    await s.wait_closed()          # until stop() is called elsewhere
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any

import grpc
import uvicorn
from tritonclient.grpc import service_pb2_grpc

from edgetier.errors import ConfigError, EdgeTierError
from edgetier.runtime import ModelRepository
from edgetier.server._backend import Backend
from edgetier.server._grpc import GrpcService
from edgetier.server._http import HttpApp
from edgetier.server._manager import ModelManager
from edgetier.server._metrics import MetricsApp, build_registry
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
        shm = SharedMemoryRegistry()
        self.backend = backend = Backend(self.manager, shm)
        self._stopped.clear()
        self._started = True
        try:
            await self.manager.start()
            self._grpc = grpc.aio.server(
                options=[
                    ("grpc.max_receive_message_length", s.max_request_size_bytes),
                    ("grpc.max_send_message_length", -1),
                    ("grpc.so_reuseport", 0),
                ]
            )
            service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                GrpcService(backend), self._grpc
            )
            address = f"[{s.host}]:{s.grpc_port}" if ":" in s.host else f"{s.host}:{s.grpc_port}"
            try:
                self.grpc_port = self._grpc.add_insecure_port(address)
            except RuntimeError as exc:
                raise ConfigError(f"cannot listen on {address} for gRPC: {exc}") from None
            await self._grpc.start()
            self.http_port = await self._serve_http(
                HttpApp(backend, max_request_size_bytes=s.max_request_size_bytes), s.http_port
            )
            if s.metrics_port is not None:
                registry = build_registry(self.manager, self._collectors)
                self.metrics_port = await self._serve_http(
                    MetricsApp(self.manager, registry), s.metrics_port
                )
        except BaseException:
            await self.stop()
            raise
        backend.ready = True
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
        sock = _bind(self.settings.host, port)
        config = uvicorn.Config(
            app,
            http="httptools",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=max(1, int(self.settings.drain_timeout_s)),
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
        """Refuse new work, answer the requests in flight, then unload the models."""
        if not self._started:
            return
        self._started = False
        if self.backend is not None:
            self.backend.ready = False
        grace = self.settings.drain_timeout_s
        waits: list[Any] = []
        for server, _ in self._http:
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

"""ServerSettings: every option of the inference server, validated.

settings = ServerSettings(model_repository="models", http_port=0, grpc_port=0)
async with InferenceServer(settings) as server:
    print(server.http_port, server.grpc_port)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from edgetier.config import ConfigModel

DEFAULT_MAX_REQUEST_SIZE_BYTES = 64 * 1024 * 1024


class ServerSettings(ConfigModel):
    """Options of :class:`edgetier.server.InferenceServer` (and of ``edgetier serve``).

    Ports may be 0: the system picks a free one and the server reports it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    metrics_port: int | None = Field(8002, ge=0, le=65535)
    """None serves no metrics endpoint."""
    model_control_mode: Literal["none", "poll", "explicit"] = "none"
    load_models: list[str] = Field(default_factory=list)
    """Models to load at start in explicit mode ("*" = all)."""
    repository_poll_secs: float = Field(15.0, gt=0)
    max_request_size_bytes: int = Field(DEFAULT_MAX_REQUEST_SIZE_BYTES, ge=1024)
    drain_timeout_s: float = Field(30.0, ge=0)
    """On stop (SIGTERM): how long requests in flight may take to finish, while readiness
    is false and new requests get 503 with Retry-After, before they are cancelled."""
    strict_readiness: bool = True
    """As Triton's --strict-readiness: ready only while every model that should be loaded
    is ready; False: ready whenever the server is up, whatever its models."""

    # HTTP connections (see docs/server.md, "Limits and timeouts")
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    """A request line and its headers must arrive within this, from the connection's
    opening or the request's first byte; else 408 and close."""
    http_body_timeout_s: float = Field(default=10.0, gt=0)
    """Longest pause while a request body arrives (else 408 and close), or while a
    response waits for the client to read (else the connection is dropped)."""
    http_keepalive_timeout_s: float = Field(default=75.0, gt=0)
    """An idle keep-alive connection is closed after this (longer than the usual 60 s of
    load balancers, so that they close first)."""
    http_max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest request line plus headers; else 431 and close."""
    http_max_connections: int = Field(default=1024, ge=1)
    """Open HTTP connections; one more is answered 503 with Retry-After and closed."""

    # gRPC connections
    grpc_max_connections: int = Field(default=1024, ge=1)
    """Open gRPC connections; more are refused by gRPC itself."""
    grpc_max_concurrent_streams: int = Field(default=1024, ge=1)
    """Calls in flight on one connection (HTTP/2 streams); more wait in the client."""
    grpc_max_connection_idle_s: float = Field(default=300.0, ge=0)
    """A connection with no call for this long is closed with GOAWAY (0 = never)."""
    grpc_max_connection_age_s: float = Field(default=0.0, ge=0)
    """A connection is closed with GOAWAY after this, calls in flight getting
    ``grpc_max_connection_age_grace_s`` more (0 = never: streams may last)."""
    grpc_max_connection_age_grace_s: float = Field(default=30.0, ge=0)
    """More time for calls in flight on a connection that reached its age."""
    grpc_handshake_timeout_s: float = Field(default=10.0, gt=0)
    """A connection must complete its HTTP/2 handshake within this."""
    grpc_keepalive_time_s: float = Field(default=7200.0, gt=0)
    """The server pings a connection idle this long, to find dead peers (Triton's 2 h)."""
    grpc_keepalive_timeout_s: float = Field(default=20.0, gt=0)
    """A ping unanswered this long closes the connection."""
    grpc_min_ping_interval_s: float = Field(default=300.0, ge=0)
    """Keepalive enforcement: a client pinging more often without calls in flight is
    sent GOAWAY after two such pings (Triton's defaults)."""
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

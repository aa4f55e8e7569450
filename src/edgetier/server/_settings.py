"""ServerSettings: every option of the inference server, validated.

settings = ServerSettings(model_repository="models", http_port=0, grpc_port=0)
async with InferenceServer(settings) as server:
    print(server.http_port, server.grpc_port)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MAX_REQUEST_SIZE_BYTES = 64 * 1024 * 1024


class ServerSettings(BaseModel):
    """Options of :class:`edgetier.server.InferenceServer` (and of ``edgetier serve``).

    Ports may be 0: the system picks a free one and the server reports it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535)
    grpc_port: int = Field(8001, ge=0, le=65535)
    metrics_port: int | None = Field(8002, ge=0, le=65535)
    """None serves no metrics endpoint."""
    model_control_mode: Literal["none", "poll", "explicit"] = "none"
    load_models: list[str] = Field(default_factory=list)
    """Models to load at start in explicit mode ("*" = all)."""
    repository_poll_secs: float = Field(15.0, gt=0)
    max_request_size_bytes: int = Field(DEFAULT_MAX_REQUEST_SIZE_BYTES, ge=1024)
    drain_timeout_s: float = Field(30.0, ge=0)
    """How long stop() waits for requests in flight before cancelling them."""
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

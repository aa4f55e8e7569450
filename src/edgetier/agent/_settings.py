"""AgentSettings: every option of the node agent, validated (``edgetier agent``'s flags).

settings = AgentSettings(controller="http://127.0.0.1:8080", name="edge-1", token=T)
settings.controller_urls  # ["http://127.0.0.1:8080"]; "http://a:8080,http://b:8080": both
settings.store_dir        # var/agent/edge-1
settings.http_port        # port_base; grpc_port, metrics_port follow it
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from edgetier.config import ConfigModel, FieldError
from edgetier.control import Metadata, check_mqtt_url

__all__ = ["PORTS_PER_SLOT", "AgentSettings", "TierName", "edgetier_command"]

TierName = Literal["terminal", "edge", "region", "cloud"]

PORTS_PER_SLOT = 10
"""Ports reserved per slot of the port plan: slot 0 is the inference server (HTTP, gRPC,
metrics), slot k >= 1 the k-th pipeline (its Prometheus and OPC UA sinks)."""


ControllerUrl = Annotated[str, Field(pattern=r"^https?://[^\s/,]+(/[^\s,]*)?$")]


class AgentSettings(ConfigModel):
    """Options of :class:`edgetier.agent.Agent`; the defaults suit one agent per node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    controller: list[ControllerUrl] = Field(
        min_length=1,
        description="its base URL, or its replicas' (a list, or comma-separated): the agent "
        "fails over from one to the next",
    )
    name: str = Field(description="the node's name (a DNS label, as every resource's)")
    token: str | None = Field(
        default=None, description="one-time enrolment token; needed until the agent enrols"
    )
    tier: TierName | None = Field(default=None, description="None: the profile's catalog tier")
    profile: str | None = Field(
        default=None,
        description="catalog id to present instead of the probed hardware (several agents "
        "on one host); its telemetry is marked simulated",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    host: str = Field(default="127.0.0.1", description="address the inference server listens on")
    port_base: int = Field(default=9000, ge=1024, le=65535 - 10 * PORTS_PER_SLOT)
    store: Path | None = Field(default=None, description="None: var/agent/NAME")
    heartbeat_s: float = Field(default=5.0, gt=0, le=3600, description="until the reply sets it")
    wait_s: float = Field(default=30.0, gt=0, le=60, description="long poll of desired state")
    mqtt_url: str | None = Field(
        default=None,
        description="MQTT broker of the controller's change notices, "
        "mqtt://[user[:password]@]host[:port] or mqtts://...; None: the long poll alone",
    )
    request_timeout_s: float = Field(default=10.0, gt=0)
    download_timeout_s: float = Field(default=300.0, gt=0)
    batch_size: int = Field(default=200, ge=1, le=500, description="records per POST")
    keep_acked_records: int = Field(
        default=10_000,
        ge=0,
        description="acknowledged records kept to resend if the controller loses some (409)",
    )
    retry_initial_s: float = Field(default=0.5, gt=0, description="back-off towards the controller")
    retry_max_s: float = Field(default=15.0, gt=0)
    restart_initial_s: float = Field(default=1.0, gt=0, description="back-off of crashed children")
    restart_max_s: float = Field(default=60.0, gt=0)
    restart_failures: int = Field(
        default=5, ge=1, description="consecutive crashes before a workload reports Failed"
    )
    healthy_after_s: float = Field(
        default=30.0, gt=0, description="a child that ran this long starts its back-off afresh"
    )
    start_settle_s: float = Field(
        default=3.0, gt=0, description="a pipeline alive this long after its start is Running"
    )
    stop_timeout_s: float = Field(
        default=20.0, gt=0, description="a child's time to drain after SIGTERM, then SIGKILL"
    )
    max_pipelines: int = Field(default=9, ge=1, le=9, description="pipelines in the port plan")
    resync_s: float = Field(default=5.0, gt=0, description="reconcile at least this often")
    renew_before_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description="renew the node credential when it expires within this (online only)",
    )
    edgetier: list[str] | None = Field(
        default=None, description="command that runs `edgetier`; None: the one of this Python"
    )

    @field_validator("controller", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value  # pydantic reports the type
        split = [
            part.strip()
            for item in items
            for part in (item.split(",") if isinstance(item, str) else [item])
        ]
        return [part for part in split if part != ""]

    _mqtt_url = field_validator("mqtt_url")(check_mqtt_url)

    @field_validator("name")
    @classmethod
    def _resource_name(cls, value: str) -> str:
        try:
            Metadata(name=value)  # the controller's rule for resource names
        except ValueError:  # nested: pydantic's own error
            raise ValueError(
                "must be a DNS label (lower-case letters, digits, '-' and '.', at most 63, "
                f"starting and ending with a letter or digit), got {value!r}"
            ) from None
        return value

    @model_validator(mode="after")
    def _check(self) -> AgentSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise FieldError("retry_max_s", f"must be >= retry_initial_s, got {self.retry_max_s}")
        if self.restart_max_s < self.restart_initial_s:
            raise FieldError(
                "restart_max_s", f"must be >= restart_initial_s, got {self.restart_max_s}"
            )
        return self

    @property
    def store_dir(self) -> Path:
        """Absolute, so that the files it writes for children (pipeline files naming model
        files) mean the same from any working directory."""
        store = self.store if self.store is not None else Path("var/agent") / self.name
        return store.resolve()

    @property
    def controller_urls(self) -> list[str]:
        """Every address of the controller, in the order given."""
        return [url.rstrip("/") for url in self.controller]

    @property
    def controller_url(self) -> str:
        """The first address (what the store records)."""
        return self.controller_urls[0]

    @property
    def http_port(self) -> int:
        return self.port_base

    @property
    def grpc_port(self) -> int:
        return self.port_base + 1

    @property
    def metrics_port(self) -> int:
        return self.port_base + 2

    def slot_ports(self, slot: int) -> list[int]:
        """The ports of pipeline slot ``slot`` (1-based)."""
        first = self.port_base + slot * PORTS_PER_SLOT
        return list(range(first, first + PORTS_PER_SLOT))


def edgetier_command(settings: AgentSettings) -> list[str]:
    """The command line that runs `edgetier` for the agent's children."""
    if settings.edgetier:
        return list(settings.edgetier)
    beside = Path(sys.executable).with_name("edgetier")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("edgetier")
    if found:
        return [found]
    return [sys.executable, "-c", "from edgetier.cli import main; main()"]

"""The controller's options: where its data lives, how long a node may stay silent, how
long telemetry is kept. ``edgetier controller`` builds them from its flags; a settings
object built in Python is checked the same way (every error at once)::

    ControllerSettings(data_dir=Path("var/controller"), node_timeout_s=15)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from edgetier.config import ConfigModel
from edgetier.control._mqtt_notices import check_mqtt_url
from edgetier.control._telemetry import RetentionPolicy

__all__ = ["DAY_S", "ControllerSettings"]

DAY_S = 86_400.0


class ControllerSettings(ConfigModel):
    """The controller's options (``edgetier controller`` flags)."""

    data_dir: Path = Field(default=Path("var/controller"))
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite at <data dir>/controller.db"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    node_timeout_s: float = Field(default=15.0, gt=0, description="no heartbeat -> Offline")
    heartbeat_interval_s: float | None = Field(
        default=None, gt=0, description="told to agents; default: node_timeout_s / 3, <= 5 s"
    )
    resync_s: float = Field(default=30.0, gt=0, description="full reconcile period")
    node_credential_ttl_s: float = Field(default=30 * DAY_S, gt=0)
    enrol_token_ttl_s: float = Field(default=DAY_S, gt=0, description="default expiry")
    raw_retention_s: float = Field(default=3600.0, ge=0)
    telemetry_bucket_s: int = Field(default=60, ge=1)
    downsampled_retention_s: float = Field(default=DAY_S, ge=0)
    compact_interval_s: float = Field(default=60.0, gt=0)
    node_concurrency: int = Field(
        default=8,
        ge=1,
        description="node requests (heartbeats, records, desired state) served at once; "
        "the rest of the thread pool stays free for operators",
    )
    node_max_waiting: int = Field(
        default=512, ge=0, description="node requests waiting beyond that; more: 503"
    )
    mqtt_url: str | None = Field(
        default=None,
        description="MQTT broker for change notices, mqtt://[user[:password]@]host[:port] "
        "or mqtts://...; None: agents learn of changes through their long poll only",
    )

    _mqtt_url = field_validator("mqtt_url")(check_mqtt_url)

    @model_validator(mode="after")
    def _retention(self) -> ControllerSettings:
        self.retention  # noqa: B018 - checks the three retention fields together
        return self

    @property
    def interval_s(self) -> float:
        if self.heartbeat_interval_s is not None:
            return self.heartbeat_interval_s
        return min(5.0, self.node_timeout_s / 3)

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(
            self.raw_retention_s, self.telemetry_bucket_s, self.downsampled_retention_s
        )

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'controller.db'}"

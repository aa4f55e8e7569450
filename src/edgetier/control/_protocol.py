"""The agent protocol: the messages between a node's agent and the controller (``/v1``).

An agent enrols once with a one-time token and receives a node credential; from then on
every request carries ``Authorization: Bearer <credential>`` and may concern its own node
only. Heartbeats carry telemetry and the actual state; desired state is fetched with a
conditional, long-polling GET; events and telemetry leave through the agent's outbox as
records numbered per node, which the controller ingests idempotently::

    POST /v1/enrol                         EnrolRequest      -> EnrolResponse
    POST /v1/nodes/{node}/heartbeat        Heartbeat         -> HeartbeatReply
    GET  /v1/nodes/{node}/desired?wait_s=  (If-None-Match)   -> DesiredState | 304
    POST /v1/nodes/{node}/records          RecordBatch       -> RecordAck
    GET  /v1/artifacts/{digest}            (assigned to the node)  -> the bytes

Where an MQTT broker is configured, the controller also publishes a :class:`DesiredNotice`
on :func:`notice_topic` (QoS 1, retained) whenever a node's desired generation changes; the
agent fetches at once on a notice. Notices only hurry the long poll: nothing depends on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from edgetier.config import ConfigModel
from edgetier.control._resources import (
    NAME_PATTERN,
    Condition,
    ModelVersionInfo,
    TelemetrySummary,
    Tier,
)

__all__ = [
    "Assignment",
    "DesiredNotice",
    "DesiredState",
    "EnrolRequest",
    "EnrolResponse",
    "HealthLimits",
    "Heartbeat",
    "HeartbeatReply",
    "Record",
    "RecordAck",
    "RecordBatch",
    "WorkloadHealth",
    "WorkloadState",
    "notice_topic",
]

MAX_WAIT_S = 60.0
"""The longest a desired-state long poll is held open."""
MAX_RECORDS = 500
"""The most records one RecordBatch may carry."""


class _Message(ConfigModel):
    model_config = ConfigDict(extra="forbid")


class EnrolRequest(_Message):
    token: str = Field(min_length=16, description="the one-time enrolment token")
    name: str = Field(pattern=NAME_PATTERN)
    tier: Tier
    profile: str = Field(min_length=1, description="hardware catalog id it presents")
    labels: dict[str, str] = Field(default_factory=dict)
    capacity: dict[str, float] = Field(default_factory=dict)


class EnrolResponse(_Message):
    node: str
    credential: str = Field(description="the node's bearer token; shown once")
    expires_at: datetime


class HealthLimits(_Message):
    """What a workload must keep to count as healthy (from the deployment's rollout
    policy and latency target); the agent judges its figures by them."""

    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    min_requests: int = Field(default=20, ge=1)
    latency_p99_ms: float | None = Field(default=None, gt=0, description="None: no latency gate")

    def verdict(self, health: WorkloadHealth) -> tuple[str, str] | None:
        """``(reason, message)`` when ``health`` breaks a limit (``ErrorRate`` or
        ``Latency``); None while it keeps them or has seen too few requests to tell."""
        if health.requests < self.min_requests:
            return None
        rate = health.errors / health.requests
        if rate > self.max_error_rate:
            return (
                "ErrorRate",
                f"{health.errors} of {health.requests} requests failed ({rate:.1%}), "
                f"over the limit of {self.max_error_rate:.1%}",
            )
        p99 = health.latency_p99_ms
        if self.latency_p99_ms is not None and p99 is not None and p99 > self.latency_p99_ms:
            return (
                "Latency",
                f"p99 latency {p99:.1f} ms over the target of {self.latency_p99_ms:g} ms "
                f"({health.requests} requests)",
            )
        return None


class WorkloadHealth(_Message):
    """A workload's serving figures since its revision started (from the node's own
    inference server metrics); ``latency_p99_ms`` None where nothing was measured."""

    requests: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    latency_p99_ms: float | None = Field(default=None, ge=0)


class WorkloadState(_Message):
    """What a node runs for one deployment, as its agent sees it."""

    deployment: str
    generation: int = Field(ge=0)
    phase: Literal["Pending", "Downloading", "Starting", "Running", "Failed", "Stopped"]
    conditions: list[Condition] = Field(default_factory=list)
    endpoint: str | None = Field(default=None, description="where it serves (host:port)")
    revision: str = Field(default="", description="the assignment's revision it runs")
    health: WorkloadHealth | None = Field(default=None, description="None: not measured")


class Heartbeat(_Message):
    telemetry: TelemetrySummary = Field(default_factory=TelemetrySummary)
    conditions: list[Condition] = Field(default_factory=list)
    workloads: list[WorkloadState] = Field(default_factory=list)
    desired_generation: int = Field(default=0, ge=0, description="the generation it runs")
    outbox_pending: int = Field(default=0, ge=0)


class HeartbeatReply(_Message):
    desired_generation: int = Field(ge=0, description="fetch desired state when it differs")
    heartbeat_interval_s: float = Field(gt=0)


class Assignment(_Message):
    """One deployment's share of this node: what to run and how much of it."""

    deployment: str
    generation: int = Field(ge=0)
    kind: Literal["model", "pipeline"]
    model: ModelVersionInfo | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="the model's config.yaml")
    pipeline: dict[str, Any] | None = Field(default=None, description="the pipeline file")
    streams: int = Field(default=0, ge=0)
    replica: int = Field(default=0, ge=0)
    revision: str = Field(
        default="", description="a digest of what runs (model, config, pipeline); echoed back"
    )
    limits: HealthLimits | None = Field(default=None, description="what counts as healthy")


class DesiredState(_Message):
    """Everything a node should run; its ``generation`` is also its ETag."""

    node: str
    generation: int = Field(ge=0)
    assignments: list[Assignment] = Field(default_factory=list)


class Record(_Message):
    """One outbox record: an event or a telemetry sample, numbered per node from 1."""

    sequence: int = Field(ge=1)
    time: datetime
    kind: str = Field(min_length=1, max_length=64)
    subject: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class RecordBatch(_Message):
    records: list[Record] = Field(min_length=1, max_length=MAX_RECORDS)


class RecordAck(_Message):
    """Every record up to ``acked_through`` is stored; the agent may drop them."""

    acked_through: int = Field(ge=0)
    duplicates: int = Field(default=0, ge=0, description="records already stored, ignored")


NOTICE_TOPIC_PREFIX = "edgetier/v1/nodes"


def notice_topic(node: str) -> str:
    """The MQTT topic of a node's change notices: ``edgetier/v1/nodes/<node>/desired``
    (node names are DNS labels, so never hold ``/``, ``+`` or ``#``)."""
    return f"{NOTICE_TOPIC_PREFIX}/{node}/desired"


class DesiredNotice(ConfigModel):
    """A change notice: the node's desired state is now at ``generation``. Fields a later
    controller adds are ignored, so notices stay additive as the rest of the protocol."""

    model_config = ConfigDict(extra="ignore")

    generation: int = Field(ge=0)

    def payload(self) -> bytes:
        return self.model_dump_json().encode()

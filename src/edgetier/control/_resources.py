"""The fleet's resources, as the API and the files spell them (``apiVersion: edgetier/v1``).

Each resource has ``metadata`` (its name), a ``spec`` (what is wanted) and, where the
controller or a node reports on it, a ``status`` with typed conditions (``Ready``,
``Throttled``, ``Offline``, ``Degraded``) that carry a reason and a message, as
Kubernetes' do. Files and API bodies are validated the same way: unknown fields are
refused and an error names the field path, the value and the limit::

    deployment = load_resource(Path("deploy/traffic.yaml"), Deployment)
    deployment.spec.selector.tiers           # ["edge", "region"]
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, Field, model_validator

from edgetier.config import ConfigModel, FieldError, load_file

__all__ = [
    "API_VERSION",
    "NAME_PATTERN",
    "Condition",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStatus",
    "Event",
    "Metadata",
    "ModelRef",
    "ModelVersionInfo",
    "Node",
    "NodeSpec",
    "NodeStatus",
    "PipelineRef",
    "PlacedLoad",
    "Placement",
    "RolloutPolicy",
    "Selector",
    "TelemetrySummary",
    "Tier",
    "load_resource",
]

API_VERSION: Literal["edgetier/v1"] = "edgetier/v1"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"
"""Resource names: DNS labels, as Kubernetes' (lower case, digits, '-' and '.')."""

Tier = Literal["terminal", "edge", "region", "cloud"]
TIERS: tuple[str, ...] = ("terminal", "edge", "region", "cloud")
ConditionType = Literal["Ready", "Throttled", "Offline", "Degraded", "Progressing", "Placed"]

R = TypeVar("R", bound="_Resource")


class _Model(ConfigModel):
    model_config = ConfigDict(extra="forbid")


class Metadata(_Model):
    """Who the resource is: its name, labels and generation (bumped when spec changes)."""

    name: str = Field(pattern=NAME_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)
    generation: int = Field(default=0, ge=0)


class Condition(_Model):
    """One observed fact about a resource, with the reason it holds (CamelCase, stable) and
    a message for people; ``status`` is "True", "False" or "Unknown" as in Kubernetes."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$")
    message: str = ""
    last_transition: datetime | None = None


class _Resource(_Model):
    api_version: Literal["edgetier/v1"] = Field(default=API_VERSION, alias="apiVersion")
    metadata: Metadata

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def name(self) -> str:
        return self.metadata.name


# -- nodes -------------------------------------------------------------------------------


class NodeSpec(_Model):
    """What a node is: its tier, hardware profile (a catalog id) and capacity."""

    tier: Tier
    profile: str = Field(description="hardware catalog id, e.g. jetson-xavier-nx")
    capacity: dict[str, float] = Field(
        default_factory=dict,
        description="what it offers beyond the profile: memory_gb, streams (1080p30 decode), "
        "power_budget_w, thermal_limit_c",
    )
    unschedulable: bool = Field(default=False, description="drained: nothing new lands here")


class TelemetrySummary(_Model):
    """The last heartbeat's figures (None where the node cannot measure them)."""

    time: datetime | None = None
    utilisation: float | None = Field(default=None, ge=0, le=1)
    temperature_c: float | None = None
    power_w: float | None = Field(default=None, ge=0)
    memory_used_bytes: int | None = Field(default=None, ge=0)
    simulated: bool = Field(
        default=False,
        description="figures presented for a catalog profile (agent --profile), not measured",
    )


class PlacedLoad(_Model):
    """What one deployment placed on a node takes of it (copied from its ``Placement``)."""

    share: float = Field(default=0.0, ge=0, le=1, description="of the node's inference capacity")
    streams: int = Field(default=0, ge=0, description="video streams it decodes there")


class NodeStatus(_Model):
    conditions: list[Condition] = Field(default_factory=list)
    last_heartbeat: datetime | None = None
    telemetry: TelemetrySummary = Field(default_factory=TelemetrySummary)
    placements: list[str] = Field(default_factory=list, description="deployments placed here")
    load: dict[str, PlacedLoad] = Field(
        default_factory=dict, description="by deployment name: what each placed one takes"
    )


class Node(_Resource):
    kind: Literal["Node"] = "Node"
    spec: NodeSpec
    status: NodeStatus = Field(default_factory=NodeStatus)


# -- models and pipelines ----------------------------------------------------------------


class ModelVersionInfo(_Model):
    """One pushed model version: its artifact and what is known of its speed."""

    model: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    platform: str = "onnxruntime_onnx"
    flops: float | None = Field(default=None, ge=0, description="per inference, from the graph")
    weight_bytes: int | None = Field(default=None, ge=0, description="from the graph")
    activation_bytes: int | None = Field(
        default=None, ge=0, description="per inference (batch 1), from the graph"
    )
    throughput: dict[str, float] = Field(
        default_factory=dict, description="measured inferences/s per hardware profile id"
    )


class ModelRef(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    version: int | None = Field(default=None, ge=1, description="None: the newest pushed")


class PipelineRef(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    file: str | None = Field(default=None, description="a pipeline file the controller holds")
    model: ModelRef | None = Field(default=None, description="the model its detector runs")


# -- deployments -------------------------------------------------------------------------


class Selector(_Model):
    """Which nodes may take a deployment; every given field must hold."""

    tiers: list[Tier] = Field(default_factory=list, description="empty: any tier")
    labels: dict[str, str] = Field(default_factory=dict)
    profiles: list[str] = Field(default_factory=list, description="catalog ids; empty: any")
    accelerator: Literal["any", "gpu", "cpu"] = "any"


class RolloutPolicy(_Model):
    """How a new model or pipeline version goes out: batch by batch, each batch held for
    ``soak_s`` after it runs, behind health gates (load errors, error rate, p99 latency
    against the deployment's ``latency_target_ms``). A failed gate stops the rollout and
    puts every node back on the previous version."""

    batches: int = Field(default=1, ge=1, le=100, description="batches of nodes, in turn")
    soak_s: float = Field(
        default=0.0, ge=0, le=86_400, description="how long a batch must stay healthy"
    )
    max_error_rate: float = Field(
        default=0.05, ge=0, le=1, description="failed / all requests a node may answer"
    )
    min_requests: int = Field(
        default=20, ge=1, description="requests a node must have seen before rate and p99 count"
    )
    latency_gate: bool = Field(
        default=True, description="fail a node whose p99 exceeds latency_target_ms"
    )
    progress_deadline_s: float = Field(
        default=600.0, gt=0, le=86_400, description="a batch not running by then fails"
    )


class DeploymentSpec(_Model):
    """What should run where: a model (served) or a pipeline (streams of frames)."""

    model: ModelRef | None = None
    pipeline: PipelineRef | None = None
    selector: Selector = Field(default_factory=Selector)
    replicas: int = Field(default=1, ge=1, le=1000)
    streams: int = Field(default=0, ge=0, le=10_000, description="video streams to carry")
    fps: float = Field(default=30.0, gt=0, le=240)
    latency_target_ms: float = Field(default=100.0, gt=0)
    power_budget_w: float | None = Field(default=None, gt=0)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)

    @model_validator(mode="after")
    def _one_workload(self) -> DeploymentSpec:
        if (self.model is None) == (self.pipeline is None):
            given = "both" if self.model is not None else "neither"
            raise FieldError("model", f"give exactly one of model and pipeline, got {given}")
        return self


class Placement(_Model):
    """One replica bound to a node, and why that node."""

    node: str
    replica: int = Field(ge=0)
    streams: int = Field(default=0, ge=0, description="for a pipeline: the streams it carries")
    share: float = Field(
        default=0.0, ge=0, le=1, description="of the node's inference capacity it takes"
    )
    reason: str = ""


class DeploymentStatus(_Model):
    observed_generation: int = Field(default=0, ge=0, alias="observedGeneration")
    placements: list[Placement] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Deployment(_Resource):
    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)


# -- events ------------------------------------------------------------------------------


class Event(_Model):
    """An append-only record; ``(source, sequence)`` is unique, so ingest is idempotent."""

    source: str = Field(description="the node (or 'controller') that wrote it")
    sequence: int = Field(ge=1, description="per source, from 1, without gaps")
    time: datetime
    kind: str = Field(min_length=1, max_length=64)
    subject: str = Field(default="", description="what it is about: a node, a deployment")
    data: dict[str, Any] = Field(default_factory=dict)


def load_resource(path: Path, kind: type[R]) -> R:
    """Read a resource file (YAML: apiVersion, kind, metadata, spec); every error at once."""
    return load_file(path, kind, what=f"{kind.__name__} file")

"""The control plane: the fleet's resources, the agent protocol and placement.

deployment = load_resource(Path("deploy/traffic.yaml"), Deployment)
decision = schedule(deployment, nodes, model)
print(decision.explain())
"""

from __future__ import annotations

from edgetier.control._policy import TierAwarePolicy
from edgetier.control._protocol import (
    Assignment,
    DesiredState,
    EnrolRequest,
    EnrolResponse,
    Heartbeat,
    HeartbeatReply,
    Record,
    RecordAck,
    RecordBatch,
    WorkloadState,
)
from edgetier.control._resources import (
    API_VERSION,
    Condition,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    Event,
    Metadata,
    ModelRef,
    ModelVersionInfo,
    Node,
    NodeSpec,
    NodeStatus,
    PipelineRef,
    PlacedLoad,
    Placement,
    Selector,
    TelemetrySummary,
    load_resource,
)
from edgetier.control._scheduler import Binding, Decision, NodeReport, PlacementPolicy, schedule

__all__ = [
    "API_VERSION",
    "Assignment",
    "Binding",
    "Condition",
    "Decision",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStatus",
    "DesiredState",
    "EnrolRequest",
    "EnrolResponse",
    "Event",
    "Heartbeat",
    "HeartbeatReply",
    "Metadata",
    "ModelRef",
    "ModelVersionInfo",
    "Node",
    "NodeReport",
    "NodeSpec",
    "NodeStatus",
    "PipelineRef",
    "PlacedLoad",
    "Placement",
    "PlacementPolicy",
    "Record",
    "RecordAck",
    "RecordBatch",
    "Selector",
    "TelemetrySummary",
    "TierAwarePolicy",
    "WorkloadState",
    "load_resource",
    "schedule",
]

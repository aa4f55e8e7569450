"""The control plane: the fleet's resources, the agent protocol, placement, and the
controller that holds them (its API, database and reconcile loop).

deployment = load_resource(Path("deploy/traffic.yaml"), Deployment)
decision = schedule(deployment, nodes, model)
print(decision.explain())

The controller's names (``Controller``, ``ControllerSettings``, ``ControlService``,
``create_app``) load on first use and need the ``control`` extra
(``pip install 'edgetier[control]'``); ``ControllerClient`` needs only the core install.
MQTT change notices (``MqttLink``, ``--mqtt``) need the ``mqtt`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgetier._lazy import lazy_names
from edgetier.control._mqtt_notices import MqttBroker, MqttLink, check_mqtt_url
from edgetier.control._policy import TierAwarePolicy
from edgetier.control._protocol import (
    Assignment,
    DesiredNotice,
    DesiredState,
    EnrolRequest,
    EnrolResponse,
    HealthLimits,
    Heartbeat,
    HeartbeatReply,
    Record,
    RecordAck,
    RecordBatch,
    WorkloadHealth,
    WorkloadState,
    notice_topic,
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
    RolloutPolicy,
    Selector,
    TelemetrySummary,
    load_resource,
)
from edgetier.control._scheduler import Binding, Decision, NodeReport, PlacementPolicy, schedule

if TYPE_CHECKING:
    from edgetier.control._api import create_app
    from edgetier.control._client import ControllerClient
    from edgetier.control._controller import Controller
    from edgetier.control._service import ControlService
    from edgetier.control._settings import ControllerSettings

__all__ = [
    "API_VERSION",
    "Assignment",
    "Binding",
    "Condition",
    "ControlService",
    "Controller",
    "ControllerClient",
    "ControllerSettings",
    "Decision",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStatus",
    "DesiredNotice",
    "DesiredState",
    "EnrolRequest",
    "EnrolResponse",
    "Event",
    "HealthLimits",
    "Heartbeat",
    "HeartbeatReply",
    "Metadata",
    "ModelRef",
    "ModelVersionInfo",
    "MqttBroker",
    "MqttLink",
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
    "RolloutPolicy",
    "Selector",
    "TelemetrySummary",
    "TierAwarePolicy",
    "WorkloadHealth",
    "WorkloadState",
    "check_mqtt_url",
    "create_app",
    "load_resource",
    "notice_topic",
    "schedule",
]

_WHERE = {
    "Controller": "_controller",
    "ControllerSettings": "_settings",
    "ControlService": "_service",
    "ControllerClient": "_client",
    "create_app": "_api",
}

__getattr__, __dir__ = lazy_names(__name__, _WHERE, __all__)

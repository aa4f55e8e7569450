"""The node agent: enrols with the controller, reports telemetry and actual state, and
reconciles the node to its desired state (the inference server, its models, the
pipelines), from a local store that carries it through outages and reboots.

settings = AgentSettings(controller="http://127.0.0.1:8080", name="edge-1", token=T)
code = asyncio.run(Agent(settings).run(stop_event))
# or: edgetier agent --controller http://127.0.0.1:8080 --token T --name edge-1
"""

from __future__ import annotations

from edgetier.agent._agent import EXIT_CREDENTIAL, EXIT_OK, Agent
from edgetier.agent._errors import (
    ControllerError,
    ControllerUnreachableError,
    CredentialRejectedError,
    OutboxGapError,
)
from edgetier.agent._settings import AgentSettings
from edgetier.agent._store import AgentStore

__all__ = [
    "EXIT_CREDENTIAL",
    "EXIT_OK",
    "Agent",
    "AgentSettings",
    "AgentStore",
    "ControllerError",
    "ControllerUnreachableError",
    "CredentialRejectedError",
    "OutboxGapError",
]

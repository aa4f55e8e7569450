"""Rows as resources: what the scheduler, the API and the agents see of the database.

The database keeps resources as plain columns and JSON; these functions build the
``edgetier/v1`` resources (``Node``, ``Deployment``, ``ModelVersionInfo``) and the API's
views from them, compute a deployment's conditions from its placements and its nodes'
reports, and a node's from its heartbeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from edgetier.control._db import DeploymentRow, ModelVersionRow, NodeRow
from edgetier.control._resources import (
    Condition,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    Metadata,
    ModelVersionInfo,
    Node,
    NodeSpec,
    NodeStatus,
    PlacedLoad,
    Placement,
    TelemetrySummary,
)

__all__ = [
    "condition_true",
    "deployment_conditions",
    "deployment_resource",
    "model_info",
    "node_resource",
    "node_view",
    "reported_conditions",
    "set_condition",
    "version_view",
]


def condition_true(conditions: Iterable[dict[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """The list with condition ``kind`` set; its transition time moves only when its
    status changes (as in Kubernetes)."""
    old = next((c for c in conditions if c.get("type") == kind), None)
    since = old.get("last_transition") if old and old.get("status") == status else None
    new = Condition(
        type=kind,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        last_transition=datetime.fromisoformat(since) if since else now,
    ).model_dump(mode="json")
    return [c for c in conditions if c.get("type") != kind] + [new]


def reported_conditions(
    old: list[dict[str, Any]], reported: list[Condition], now: datetime
) -> list[dict[str, Any]]:
    """A node's conditions after a heartbeat: the agent's, with ``Offline`` the
    controller's own; ``Ready`` True unless the agent says otherwise; a ``Throttled`` the
    agent stopped sending is False."""
    conditions = [c for c in old if c.get("type") in ("Offline", "Ready", "Throttled")]
    types = {c.type for c in reported}
    for condition in reported:
        if condition.type != "Offline":
            conditions = set_condition(
                conditions,
                condition.type,
                condition.status,
                condition.reason,
                condition.message,
                now,
            )
    if "Throttled" not in types and condition_true(conditions, "Throttled"):
        conditions = set_condition(conditions, "Throttled", "False", "NotReported", "", now)
    conditions = set_condition(conditions, "Offline", "False", "HeartbeatReceived", "", now)
    if "Ready" not in types:
        conditions = set_condition(conditions, "Ready", "True", "HeartbeatReceived", "", now)
    return conditions


def node_resource(
    row: NodeRow, placements: Iterable[str] = (), *, load: Mapping[str, PlacedLoad] | None = None
) -> Node:
    """The node with the deployments placed on it and, for the scheduler, what each of
    them takes of it."""
    return Node(
        metadata=Metadata(name=row.name, labels=dict(row.labels)),
        spec=NodeSpec(
            tier=row.tier,  # type: ignore[arg-type]
            profile=row.profile,
            capacity=dict(row.capacity),
            unschedulable=row.unschedulable,
        ),
        status=NodeStatus(
            conditions=[Condition.model_validate(c) for c in row.conditions],
            last_heartbeat=row.last_heartbeat,
            telemetry=TelemetrySummary.model_validate(row.telemetry or {}),
            placements=sorted(placements),
            load=dict(load or {}),
        ),
    )


def node_view(row: NodeRow, placements: Iterable[str]) -> dict[str, Any]:
    """A node as the API shows it: the resource, with the agent protocol's figures."""
    node = node_resource(row, placements).model_dump(mode="json", by_alias=True)
    node["status"].update(
        {
            "desired_generation": row.desired_generation,
            "reported_generation": row.reported_generation,
            "workloads": row.workloads,
            "outbox_pending": row.outbox_pending,
            "enrolled_at": row.enrolled_at.isoformat(),
        }
    )
    return node


def model_info(row: ModelVersionRow) -> ModelVersionInfo:
    return ModelVersionInfo(
        model=row.model,
        version=row.version,
        digest=row.digest,
        size_bytes=row.size_bytes,
        precision=row.precision,  # type: ignore[arg-type]
        platform=row.platform,
        flops=row.flops,
        weight_bytes=row.weight_bytes,
        activation_bytes=row.activation_bytes,
        throughput={k: float(v) for k, v in row.throughput.items()},
    )


def version_view(row: ModelVersionRow) -> dict[str, Any]:
    """A model version as the API shows it."""
    return {
        **model_info(row).model_dump(mode="json"),
        "filename": row.filename,
        "config": row.config,
        "created_at": row.created_at.isoformat(),
    }


def deployment_resource(
    row: DeploymentRow, nodes: dict[str, NodeRow] | None = None, now: datetime | None = None
) -> Deployment:
    """The deployment with its status; with ``nodes``, conditions from their reports."""
    placements = [Placement.model_validate(p) for p in row.placements]
    conditions = [Condition.model_validate(c) for c in row.conditions]
    if nodes is not None and now is not None:
        computed = deployment_conditions(row, nodes, now)
        conditions = [Condition.model_validate(c) for c in computed]
    return Deployment(
        metadata=Metadata(name=row.name, labels=dict(row.labels), generation=row.generation),
        spec=DeploymentSpec.model_validate(row.spec),
        status=DeploymentStatus(
            observedGeneration=row.observed_generation,
            placements=placements,
            conditions=conditions,
        ),
    )


def _runs_assigned(reported: dict[str, Any], node: NodeRow, row: DeploymentRow) -> bool:
    """Whether a node's report of a workload concerns what the node is told to run of
    ``row`` (during a rollout, some nodes are told to run the previous revision)."""
    if reported.get("deployment") != row.name:
        return False
    assigned = next((a for a in node.desired if a.get("deployment") == row.name), None)
    if assigned is None:
        return int(reported.get("generation", 0)) >= row.generation
    if reported.get("revision") and assigned.get("revision"):
        return bool(reported["revision"] == assigned["revision"])
    return int(reported.get("generation", 0)) >= int(assigned.get("generation", 0))


def deployment_conditions(
    row: DeploymentRow, nodes: dict[str, NodeRow], now: datetime
) -> list[dict[str, Any]]:
    """Placed (the scheduler's), then Ready, Progressing and Degraded from what the nodes
    report for this deployment at its current generation."""
    conditions = [dict(c) for c in row.conditions]  # stored ones keep their transition times
    ready: list[str] = []
    waiting: list[str] = []
    failed: list[str] = []
    for placement in row.placements:
        name = placement["node"]
        node = nodes.get(name)
        if node is None or condition_true(node.conditions, "Offline"):
            failed.append(f"{name} offline")
            continue
        phases = [w for w in node.workloads if _runs_assigned(w, node, row)]
        if any(w.get("phase") == "Failed" for w in phases):
            failed.append(f"{name} failed")
        elif phases and all(w.get("phase") == "Running" for w in phases):
            ready.append(name)
        else:
            waiting.append(name)
    total = len(row.placements)
    if total and len(ready) == total and row.satisfied:
        conditions = set_condition(
            conditions, "Ready", "True", "AllRunning", f"{total} placement(s) running", now
        )
    else:
        detail = "; ".join([*failed, *(f"{n} not running yet" for n in waiting)])
        message = detail or ("nothing placed" if not total else "not every replica is placed")
        conditions = set_condition(conditions, "Ready", "False", "NotRunning", message, now)
    progressing = bool(waiting) or row.observed_generation != row.generation
    conditions = set_condition(
        conditions,
        "Progressing",
        "True" if progressing else "False",
        "Converging" if progressing else "Converged",
        f"{len(waiting)} node(s) still converging" if waiting else "",
        now,
    )
    degraded = bool(failed) or not row.satisfied
    reason = "NodesFailing" if failed else ("Unsatisfied" if not row.satisfied else "Healthy")
    conditions = set_condition(
        conditions,
        "Degraded",
        "True" if degraded else "False",
        reason,
        "; ".join(failed) if failed else "",
        now,
    )
    return conditions

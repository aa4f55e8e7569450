"""Rows as resources: what the scheduler, the API and the agents see of the database.

The database keeps resources as plain columns and JSON; these functions build the
``edgetier/v1`` resources (``Node``, ``Deployment``, ``ModelVersionInfo``) from them, and
compute a deployment's conditions from its placements and its nodes' reports.
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
    "set_condition",
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
        phases = [
            w
            for w in node.workloads
            if w.get("deployment") == row.name and int(w.get("generation", 0)) >= row.generation
        ]
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

"""The controller's reconcile: deployments to placements, placements to each node's
desired state.

Level-triggered and idempotent, as a Kubernetes controller: a pass reads everything it
needs from the database, runs the scheduler for the deployments it was asked about, and
writes only what differs, so running it twice, or after a restart, changes nothing. A
deployment is placed anew when its spec changed (``generation`` past
``observedGeneration``), when it is not fully placed, or when the scheduler now rejects a
node it is on (offline, drained, throttled, ...); otherwise its placements stay, so a
healthy fleet does not churn. Every node's desired state is then rebuilt from all
placements, and a node whose assignments changed gets the next desired generation::

    result = reconcile(session, now, deployments={"traffic"})
    result.changed_nodes          # {"edge-1": 7}: wake their long polls after commit
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from edgetier.control._db import DeploymentRow, ModelVersionRow, NodeRow, PipelineRow
from edgetier.control._events import CONTROLLER, append
from edgetier.control._protocol import Assignment
from edgetier.control._resources import DeploymentSpec, ModelRef, ModelVersionInfo, PlacedLoad
from edgetier.control._rollouts import health_limits, pin
from edgetier.control._scheduler import PlacementPolicy, schedule
from edgetier.control._views import (
    condition_true,
    deployment_resource,
    model_info,
    node_resource,
    set_condition,
)

__all__ = [
    "ReconcileResult",
    "mark_offline",
    "model_of",
    "placements_by_node",
    "reconcile",
    "resolve_model",
    "silent_nodes",
    "unsatisfied",
    "users_of_model",
    "users_of_pipeline",
]


@dataclass
class ReconcileResult:
    scheduled: list[str] = field(default_factory=list)  # deployments placed anew
    changed_nodes: dict[str, int] = field(default_factory=dict)  # node -> desired generation


def model_of(spec: dict[str, Any]) -> ModelRef | None:
    """The model a deployment spec runs (its own, or its pipeline's detector)."""
    ref = spec.get("model") or (spec.get("pipeline") or {}).get("model")
    return ModelRef.model_validate(ref) if ref else None


def resolve_model(session: Session, ref: ModelRef | None) -> ModelVersionRow | None:
    """The version a reference names; the newest pushed when it names none."""
    if ref is None:
        return None
    query = select(ModelVersionRow).where(ModelVersionRow.model == ref.name)
    if ref.version is not None:
        query = query.where(ModelVersionRow.version == ref.version)
    return session.scalars(query.order_by(ModelVersionRow.version.desc()).limit(1)).first()


def placements_by_node(session: Session) -> dict[str, list[str]]:
    """The deployments placed on each node (each name once)."""
    on: dict[str, list[str]] = defaultdict(list)
    for name, placements in session.execute(select(DeploymentRow.name, DeploymentRow.placements)):
        for node in dict.fromkeys(p["node"] for p in placements):
            on[node].append(name)
    return on


def unsatisfied(session: Session) -> list[str]:
    """Deployments not fully placed, or not placed for their current spec: those a new
    or returning node may help."""
    return [
        name
        for name, satisfied, observed, generation in session.execute(
            select(
                DeploymentRow.name,
                DeploymentRow.satisfied,
                DeploymentRow.observed_generation,
                DeploymentRow.generation,
            )
        )
        if not satisfied or observed != generation
    ]


def users_of_model(session: Session, model: str) -> list[str]:
    """Deployments that run ``model`` (themselves or in their pipeline)."""
    return [
        name
        for name, spec in session.execute(select(DeploymentRow.name, DeploymentRow.spec))
        if (ref := model_of(spec)) is not None and ref.name == model
    ]


def users_of_pipeline(session: Session, pipeline: str) -> list[str]:
    """Deployments that run the pipeline file held as ``pipeline``."""
    return [
        name
        for name, spec in session.execute(select(DeploymentRow.name, DeploymentRow.spec))
        if (spec.get("pipeline") or {}).get("name") == pipeline
    ]


def reconcile(
    session: Session,
    now: datetime,
    *,
    deployments: Iterable[str] | None = None,
    policy: PlacementPolicy | None = None,
) -> ReconcileResult:
    """Place the named deployments (all when None) where needed, then rebuild every
    node's desired state. The caller commits and then wakes ``changed_nodes``."""
    result = ReconcileResult()
    nodes = {row.name: row for row in session.scalars(select(NodeRow).order_by(NodeRow.name))}
    rows = {row.name: row for row in session.scalars(select(DeploymentRow))}
    wanted = sorted(rows) if deployments is None else sorted(set(deployments) & set(rows))
    for name in wanted:
        if _place(session, rows[name], rows, nodes, now, policy):
            result.scheduled.append(name)
    result.changed_nodes = _write_desired(session, rows, nodes, now)
    return result


def _loads(rows: dict[str, DeploymentRow], skip: str) -> dict[str, dict[str, PlacedLoad]]:
    """By node: what each deployment but ``skip`` placed there takes of it (the shares and
    streams of its replicas there, summed)."""
    on: dict[str, dict[str, PlacedLoad]] = defaultdict(dict)
    for row in rows.values():
        if row.name == skip:
            continue
        for placement in row.placements:
            loads = on[placement["node"]]
            before = loads.get(row.name, PlacedLoad())
            loads[row.name] = PlacedLoad(
                share=min(1.0, before.share + placement.get("share", 0.0)),
                streams=before.streams + placement.get("streams", 0),
            )
    return on


def _place(
    session: Session,
    row: DeploymentRow,
    rows: dict[str, DeploymentRow],
    nodes: dict[str, NodeRow],
    now: datetime,
    policy: PlacementPolicy | None,
) -> bool:
    """Run the scheduler for one deployment; True when its placements were replaced."""
    deployment = deployment_resource(row)
    version = resolve_model(session, model_of(row.spec))
    on = _loads(rows, row.name)
    views = [
        node_resource(node, on.get(name, {}).keys(), load=on.get(name))
        for name, node in nodes.items()
    ]
    decision = schedule(deployment, views, model_info(version) if version else None, policy=policy)
    rejected = {r.node for r in decision.reports if not r.eligible}
    current = {p["node"] for p in row.placements}
    reasons = []
    if row.observed_generation != row.generation:
        reasons.append(f"generation {row.generation}")
    if not row.satisfied:
        reasons.append("not fully placed")
    lost = sorted(n for n in current if n not in nodes or n in rejected)
    if lost:
        reasons.append(f"node(s) no longer eligible: {', '.join(lost)}")
    if not reasons:
        return False
    placements = [p.model_dump(mode="json") for p in decision.placements]
    changed = placements != row.placements
    row.placements = placements
    row.satisfied = decision.satisfied
    row.observed_generation = row.generation
    row.decision = decision.as_dict()
    row.explanation = decision.explain()
    row.conditions = set_condition(
        list(row.conditions),
        "Placed",
        "True" if decision.satisfied else "False",
        "Scheduled" if decision.satisfied else "Unschedulable",
        decision.message or f"{len(placements)} placement(s)",
        now,
    )
    row.updated_at = now
    if changed or reasons != ["not fully placed"]:
        append(
            session,
            CONTROLLER,
            now,
            "DeploymentPlaced" if decision.satisfied else "DeploymentUnsatisfied",
            subject=row.name,
            data={
                "why": "; ".join(reasons),
                "placements": placements,
                "satisfied": decision.satisfied,
                "message": decision.message,
            },
        )
    return changed


def _assignment(
    session: Session,
    row: DeploymentRow,
    placement: dict[str, Any],
    versions: dict[tuple[str, int | None], ModelVersionInfo | None],
) -> Assignment:
    spec = DeploymentSpec.model_validate(row.spec)  # validated when it was applied
    ref = model_of(row.spec)
    key = (ref.name, ref.version) if ref else ("", None)
    if key not in versions:
        version = resolve_model(session, ref)
        versions[key] = model_info(version) if version else None
    info = versions[key]
    config: dict[str, Any] = {}
    if info is not None and spec.model is not None:
        stored = session.get(ModelVersionRow, (info.model, info.version))
        config = dict(stored.config) if stored else {}
    pipeline: dict[str, Any] | None = None
    if spec.pipeline is not None:
        stored_pipeline = session.get(PipelineRow, spec.pipeline.name)
        pipeline = dict(stored_pipeline.content) if stored_pipeline else None
    return Assignment(
        deployment=row.name,
        generation=row.generation,
        kind="model" if spec.model is not None else "pipeline",
        model=info,
        config=config,
        pipeline=pipeline,
        streams=int(placement.get("streams", 0)),
        replica=int(placement.get("replica", 0)),
        limits=health_limits(spec),
    )


def _write_desired(
    session: Session,
    rows: dict[str, DeploymentRow],
    nodes: dict[str, NodeRow],
    now: datetime,
) -> dict[str, int]:
    wanted: dict[str, list[dict[str, Any]]] = {name: [] for name in nodes}
    versions: dict[tuple[str, int | None], ModelVersionInfo | None] = {}
    for name in sorted(rows):
        row = rows[name]
        placed = [
            (p["node"], _assignment(session, row, p, versions).model_dump(mode="json"))
            for p in row.placements
            if p["node"] in wanted
        ]
        # a new version goes out batch by batch: its rollout says which node runs which
        for node_name, assignment in pin(session, row, placed, nodes, now):
            wanted[node_name].append(assignment)
    changed: dict[str, int] = {}
    for name, node in nodes.items():
        if wanted[name] == node.desired:
            continue
        node.desired = wanted[name]
        node.desired_generation += 1
        changed[name] = node.desired_generation
        append(
            session,
            CONTROLLER,
            now,
            "DesiredStateChanged",
            subject=name,
            data={
                "generation": node.desired_generation,
                "deployments": sorted({a["deployment"] for a in wanted[name]}),
            },
        )
    return changed


def _silent_for(timeout_s: float, now: datetime) -> ColumnElement[bool]:
    """Nodes whose last heartbeat (or, never heard, their enrolment) is older than
    ``timeout_s``."""
    cutoff = now - timedelta(seconds=timeout_s)
    return or_(
        NodeRow.last_heartbeat < cutoff,
        and_(NodeRow.last_heartbeat.is_(None), NodeRow.enrolled_at < cutoff),
    )


def silent_nodes(session: Session, now: datetime, timeout_s: float) -> list[str]:
    """The nodes :func:`mark_offline` would mark now; reads two columns only, so that the
    loop's check on every tick stays cheap on a large fleet with nodes long gone."""
    rows = session.execute(
        select(NodeRow.name, NodeRow.conditions).where(_silent_for(timeout_s, now))
    )
    return [name for name, conditions in rows if not condition_true(conditions, "Offline")]


def mark_offline(session: Session, now: datetime, timeout_s: float) -> list[str]:
    """Nodes whose last heartbeat (or enrolment) is older than ``timeout_s`` get
    ``Offline``; returns the ones that just went offline."""
    gone = []
    for node in session.scalars(select(NodeRow).where(_silent_for(timeout_s, now))):
        if condition_true(node.conditions, "Offline"):
            continue
        seen = node.last_heartbeat or node.enrolled_at
        message = f"no heartbeat for {timeout_s:g} s (last {seen.isoformat(timespec='seconds')})"
        conditions = set_condition(
            list(node.conditions), "Offline", "True", "NoHeartbeat", message, now
        )
        node.conditions = set_condition(conditions, "Ready", "Unknown", "NoHeartbeat", message, now)
        append(
            session, CONTROLLER, now, "NodeOffline", subject=node.name, data={"message": message}
        )
        gone.append(node.name)
    return gone

"""Rollouts: a new model or pipeline version goes out batch by batch behind health gates.

A deployment's *workload* is what its nodes run: the kind, the model version, its config
and the pipeline file; its *revision* is a digest of them. When the workload a deployment
resolves to differs from the one its nodes run, the reconcile's desired-state writer
starts a rollout (:func:`pin`) instead of telling every node at once: the first batch of
nodes gets the new revision, the rest keep the previous one. Once per loop tick the
driver (:func:`drive`) looks at what the updated nodes report:

- a gate fails (the new revision failed to load, the node reports it ``Degraded``, its
  error rate or its p99 latency breaks the policy, or the batch is not running by the
  progress deadline): the rollout is ``RolledBack`` and every node goes back to the
  previous revision; the controller does this, never the node, so nothing flaps;
- every updated node runs the new revision and has done so for ``soak_s``: the next batch
  gets it, or, after the last, the rollout has ``Succeeded``.

An operator can pause, resume and undo (every node back to the previous revision). The
states: ``Progressing``, ``Paused``, ``Succeeded``, ``RolledBack``, ``Undone``::

    assignments = pin(session, row, wanted, nodes, now)   # in every reconcile pass
    moved = drive(session, now)                           # once per loop tick
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgetier.control._db import DeploymentRow, NodeRow, RolloutRow
from edgetier.control._events import CONTROLLER, append
from edgetier.control._protocol import HealthLimits, WorkloadHealth
from edgetier.control._resources import DeploymentSpec
from edgetier.control._views import condition_true
from edgetier.errors import ConflictError, NotFoundError

__all__ = [
    "ACTIVE",
    "STATES",
    "Placed",
    "active_rollouts",
    "drive",
    "health_limits",
    "operate",
    "pin",
    "revision_of",
    "rollout_view",
    "workload_of",
]

State = Literal["Progressing", "Paused", "Succeeded", "RolledBack", "Undone"]
STATES: tuple[State, ...] = ("Progressing", "Paused", "Succeeded", "RolledBack", "Undone")
ACTIVE = ("Progressing", "Paused")
"""States in which the nodes run a mix of the two revisions."""
PINNED_BACK = ("RolledBack", "Undone")
"""States in which every node runs the previous revision."""

GATE_REASONS = ("LoadFailed", "ErrorRate", "Latency", "ProgressDeadline")
_WORKLOAD_KEYS = ("kind", "model", "config", "pipeline")
# workload conditions that say nothing of the version itself
_NOT_THE_VERSION = ("ControllerUnreachable", "Recovered")

Placed = list[tuple[str, dict[str, Any]]]
"""(node, assignment as JSON) for each placement of one deployment."""


def revision_of(assignment: dict[str, Any]) -> str:
    """A short digest of what an assignment runs (kind, model, config, pipeline)."""
    what = {key: assignment.get(key) for key in _WORKLOAD_KEYS}
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def workload_of(assignment: dict[str, Any]) -> dict[str, Any]:
    """The part of an assignment a rollout changes, with its revision (the one it was
    written with, else computed) and generation."""
    return {
        **{key: assignment.get(key) for key in _WORKLOAD_KEYS},
        "revision": assignment.get("revision") or revision_of(assignment),
        "generation": int(assignment.get("generation", 0)),
    }


def _with(assignment: dict[str, Any], workload: dict[str, Any]) -> dict[str, Any]:
    """``assignment`` (its node's share: streams, replica) running ``workload``."""
    return {
        **assignment,
        **{key: workload.get(key) for key in _WORKLOAD_KEYS},
        "revision": workload["revision"],
        "generation": workload["generation"],
    }


def describe(workload: dict[str, Any]) -> str:
    """Words for a workload: "model detector version 2 (rev 3f2a...)"."""
    model = workload.get("model") or {}
    if workload.get("kind") == "pipeline":
        name = (workload.get("pipeline") or {}).get("name", "")
        what = f"pipeline {name}".strip()
        if model:
            what += f" with model {model.get('model')} version {model.get('version')}"
    else:
        what = f"model {model.get('model')} version {model.get('version')}"
    return f"{what} (revision {workload.get('revision', '')})"


# -- desired state: which node runs which revision ------------------------------------------


def pin(
    session: Session,
    row: DeploymentRow,
    placed: Placed,
    nodes: dict[str, NodeRow],
    now: datetime,
) -> Placed:
    """The assignments of ``row``'s placements as its rollout has them: the new revision
    on the nodes updated so far, the previous one elsewhere. Starts a rollout when the
    deployment's workload differs from the one its nodes run (or from the one its last
    rollout went to). ``placed`` holds the assignments of the workload the spec names."""
    if not placed:
        return placed
    revision = revision_of(placed[0][1])  # the placements differ in streams and replica only
    for _, assignment in placed:
        assignment["revision"] = revision
    target = workload_of(placed[0][1])
    rollout = session.get(RolloutRow, row.name)
    if rollout is not None and rollout.to_workload.get("revision") == target["revision"]:
        # the deployment still names what this rollout went to
        if rollout.to_workload != target:
            rollout.to_workload = target  # a newer generation with the same workload
        if rollout.state in PINNED_BACK:
            return [(node, _with(a, rollout.from_workload)) for node, a in placed]
        if rollout.state in ACTIVE:
            updated = set(rollout.updated)
            return [
                (node, a if node in updated else _with(a, rollout.from_workload))
                for node, a in placed
            ]
        return placed  # Succeeded
    if (
        rollout is not None
        and rollout.state in PINNED_BACK
        and rollout.from_workload.get("revision") == target["revision"]
    ):
        # the spec names the version the nodes went back to: the rollout is settled there,
        # so that naming the new version again later starts a new one
        rollout.to_workload, rollout.to_revision = target, row.generation
        _say(rollout, f"settled: the deployment names revision {row.generation} again", now)
        return placed
    stable = _stable(rollout, placed, nodes, row.name)
    if stable is None or stable["revision"] == target["revision"]:
        return placed  # nothing ran before, or the nodes run it already: nothing to roll out
    if rollout is not None and rollout.state in ACTIVE:
        append(
            session,
            CONTROLLER,
            now,
            "RolloutSuperseded",
            subject=row.name,
            data={"to_revision": rollout.to_revision, "by": target["revision"]},
        )
    rollout = _start(session, row, rollout, stable, target, [n for n, _ in placed], now)
    updated = set(rollout.updated)
    return [(node, a if node in updated else _with(a, stable)) for node, a in placed]


def _stable(
    rollout: RolloutRow | None, placed: Placed, nodes: dict[str, NodeRow], deployment: str
) -> dict[str, Any] | None:
    """What the nodes run now, to roll back to: the last rollout's settled revision, or
    (no rollout yet) the revision most of the deployment's nodes are told to run."""
    if rollout is not None:
        if rollout.state in ("Succeeded",):
            return dict(rollout.to_workload)
        return dict(rollout.from_workload)  # active (superseded) or pinned back
    running: Counter[str] = Counter()
    found: dict[str, dict[str, Any]] = {}
    for name, _ in placed:
        node = nodes.get(name)
        for assignment in node.desired if node is not None else []:
            if assignment.get("deployment") == deployment:
                workload = workload_of(assignment)
                running[workload["revision"]] += 1
                found[workload["revision"]] = workload
    if not running:
        return None
    return found[running.most_common(1)[0][0]]


def _start(
    session: Session,
    row: DeploymentRow,
    rollout: RolloutRow | None,
    stable: dict[str, Any],
    target: dict[str, Any],
    order: list[str],
    now: datetime,
) -> RolloutRow:
    policy = DeploymentSpec.model_validate(row.spec).rollout
    order = list(dict.fromkeys(order))
    batches = max(1, min(policy.batches, len(order)))
    if rollout is None:
        rollout = RolloutRow(deployment=row.name, started_at=now, batch_started_at=now)
        session.add(rollout)
    rollout.state = "Progressing"
    rollout.from_revision = int(stable["generation"])
    rollout.to_revision = row.generation
    rollout.from_workload = stable
    rollout.to_workload = target
    rollout.batches = batches
    rollout.batch = 1
    rollout.updated = order[: _batch_size(len(order), batches)]
    rollout.reason = ""
    rollout.message = f"batch 1 of {batches}: {', '.join(rollout.updated)}"
    rollout.started_at = rollout.batch_started_at = rollout.updated_at = now
    rollout.converged_at = None
    append(
        session,
        CONTROLLER,
        now,
        "RolloutStarted",
        subject=row.name,
        data={
            "from": describe(stable),
            "to": describe(target),
            "from_revision": rollout.from_revision,
            "to_revision": rollout.to_revision,
            "batches": batches,
            "nodes": rollout.updated,
        },
    )
    return rollout


def _batch_size(total: int, batches: int) -> int:
    return max(1, math.ceil(total / max(1, batches)))


# -- the driver: gates and batches ------------------------------------------------------------


def active_rollouts(session: Session) -> list[str]:
    """Deployments with a rollout the driver has to watch (one cheap query per tick)."""
    query = select(RolloutRow.deployment).where(RolloutRow.state == "Progressing")
    return list(session.scalars(query))


def drive(session: Session, now: datetime) -> list[str]:
    """One pass over every progressing rollout: stop and roll back the ones whose gate
    failed, move on the ones whose batch ran healthy for its soak time. Returns the
    deployments whose nodes' desired state must be written anew (the caller reconciles)."""
    moved = []
    rollouts = session.scalars(select(RolloutRow).where(RolloutRow.state == "Progressing"))
    for rollout in list(rollouts):
        row = session.get(DeploymentRow, rollout.deployment)
        if row is None:
            continue
        if _step(session, rollout, row, now):
            moved.append(row.name)
    return moved


def _placed_nodes(row: DeploymentRow) -> list[str]:
    return list(dict.fromkeys(p["node"] for p in row.placements))


def _step(session: Session, rollout: RolloutRow, row: DeploymentRow, now: datetime) -> bool:
    spec = DeploymentSpec.model_validate(row.spec)
    policy = spec.rollout
    order = _placed_nodes(row)
    updated = [n for n in rollout.updated if n in order]
    nodes = {n.name: n for n in session.scalars(select(NodeRow).where(NodeRow.name.in_(updated)))}
    limits = health_limits(spec)
    waiting = []
    for name in updated:
        node = nodes.get(name)
        verdict = _gate(rollout, row.name, node, limits) if node is not None else None
        if verdict is not None:
            reason, message = verdict
            _roll_back(session, rollout, f"{name}: {message}", reason, now)
            return True
        if node is None or not _runs_new(rollout, row.name, node):
            waiting.append(name)
    if waiting:
        rollout.converged_at = None
        late_s = (now - rollout.batch_started_at).total_seconds()
        if late_s > policy.progress_deadline_s:
            message = (
                f"batch {rollout.batch} of {rollout.batches} not running after "
                f"{policy.progress_deadline_s:g} s (progress_deadline_s): {', '.join(waiting)}"
            )
            _roll_back(session, rollout, message, "ProgressDeadline", now)
            return True
        words = f"batch {rollout.batch} of {rollout.batches}"
        _say(rollout, f"{words}: waiting for {', '.join(waiting)} to run the new revision", now)
        return False
    if rollout.converged_at is None:
        rollout.converged_at = now
    soaked_s = (now - rollout.converged_at).total_seconds()
    if soaked_s < policy.soak_s:
        words = f"batch {rollout.batch} of {rollout.batches}"
        _say(rollout, f"{words} running; soaking {soaked_s:.0f} of {policy.soak_s:g} s", now)
        return False
    remaining = [n for n in order if n not in set(updated)]
    if not remaining or rollout.batch >= rollout.batches:
        if remaining:  # nodes placed since the rollout began: they take the new one now
            rollout.updated = [*rollout.updated, *remaining]
        rollout.state = "Succeeded"
        _say(rollout, f"{len(order)} node(s) run revision {rollout.to_revision}", now)
        append(
            session,
            CONTROLLER,
            now,
            "RolloutSucceeded",
            subject=row.name,
            data={"to_revision": rollout.to_revision, "nodes": len(order)},
        )
        return True
    rollout.batch += 1
    last = rollout.batch >= rollout.batches
    size = len(remaining) if last else _batch_size(len(order), rollout.batches)
    batch = remaining[:size]
    rollout.updated = [*rollout.updated, *batch]
    rollout.batch_started_at, rollout.converged_at = now, None
    _say(rollout, f"batch {rollout.batch} of {rollout.batches}: {', '.join(batch)}", now)
    append(
        session,
        CONTROLLER,
        now,
        "RolloutBatchStarted",
        subject=row.name,
        data={"batch": rollout.batch, "batches": rollout.batches, "nodes": batch},
    )
    return True


def health_limits(spec: DeploymentSpec) -> HealthLimits:
    """What a node must keep while it runs the deployment (also sent to the agents)."""
    policy = spec.rollout
    return HealthLimits(
        max_error_rate=policy.max_error_rate,
        min_requests=policy.min_requests,
        latency_p99_ms=spec.latency_target_ms if policy.latency_gate else None,
    )


def _workload(node: NodeRow, deployment: str) -> dict[str, Any] | None:
    return next((w for w in node.workloads if w.get("deployment") == deployment), None)


def _is_new(rollout: RolloutRow, reported: dict[str, Any]) -> bool:
    """Whether a node's report concerns the new revision (agents that do not echo the
    revision are judged by the generation)."""
    revision = reported.get("revision") or ""
    if revision:
        return bool(revision == rollout.to_workload.get("revision"))
    return int(reported.get("generation", 0)) >= rollout.to_revision > rollout.from_revision


def _runs_new(rollout: RolloutRow, deployment: str, node: NodeRow) -> bool:
    if condition_true(node.conditions, "Offline"):
        return False
    reported = _workload(node, deployment)
    return reported is not None and _is_new(rollout, reported) and reported["phase"] == "Running"


def _gate(
    rollout: RolloutRow, deployment: str, node: NodeRow, limits: HealthLimits
) -> tuple[str, str] | None:
    """Why the new revision fails its gate on ``node`` (reason, message); None if it holds
    (or the node does not run it yet)."""
    reported = _workload(node, deployment)
    if reported is None or not _is_new(rollout, reported):
        return None
    conditions = {c.get("type"): c for c in reported.get("conditions", [])}
    if reported.get("phase") == "Failed":
        ready = conditions.get("Ready") or {}
        return "LoadFailed", f"{deployment} failed: {ready.get('message') or ready.get('reason')}"
    degraded = conditions.get("Degraded") or {}
    if degraded.get("status") == "True" and degraded.get("reason") not in _NOT_THE_VERSION:
        reason = str(degraded.get("reason"))
        gate = reason if reason in GATE_REASONS else "LoadFailed"
        return gate, f"{deployment} degraded ({reason}): {degraded.get('message', '')}"
    if reported.get("health"):
        verdict = limits.verdict(WorkloadHealth.model_validate(reported["health"]))
        if verdict is not None:
            return verdict[0], f"{deployment}: {verdict[1]}"
    return None


def _say(rollout: RolloutRow, message: str, now: datetime) -> None:
    if rollout.message != message:
        rollout.message = message
        rollout.updated_at = now


def _roll_back(
    session: Session, rollout: RolloutRow, message: str, reason: str, now: datetime
) -> None:
    rollout.state, rollout.reason = "RolledBack", reason
    _say(rollout, f"gate failed on batch {rollout.batch} of {rollout.batches}: {message}", now)
    append(
        session,
        CONTROLLER,
        now,
        "RolloutRolledBack",
        subject=rollout.deployment,
        data={
            "reason": reason,
            "message": message,
            "batch": rollout.batch,
            "to_revision": rollout.to_revision,
            "back_to_revision": rollout.from_revision,
        },
    )


# -- the operator's verbs -------------------------------------------------------------------

Verb = Literal["pause", "resume", "undo"]
_ALLOWED: dict[str, tuple[str, ...]] = {
    "pause": ("Progressing",),
    "resume": ("Paused",),
    "undo": ("Progressing", "Paused", "Succeeded"),
}


def operate(session: Session, deployment: str, verb: Verb, now: datetime) -> RolloutRow:
    """Pause, resume or undo the deployment's rollout; ConflictError when its state does
    not allow it."""
    rollout = session.get(RolloutRow, deployment)
    if rollout is None:
        if session.get(DeploymentRow, deployment) is None:
            raise NotFoundError(f"no deployment named {deployment!r}")
        raise NotFoundError(f"deployment {deployment!r} has had no rollout")
    if rollout.state not in _ALLOWED[verb]:
        allowed = " or ".join(_ALLOWED[verb])
        raise ConflictError(
            f"rollout of {deployment} is {rollout.state}: only a {allowed} rollout can {verb}"
        )
    if verb == "pause":
        rollout.state = "Paused"
        _say(rollout, f"paused on batch {rollout.batch} of {rollout.batches}", now)
    elif verb == "resume":
        rollout.state = "Progressing"
        rollout.batch_started_at, rollout.converged_at = now, None
        _say(rollout, f"resumed on batch {rollout.batch} of {rollout.batches}", now)
    else:
        rollout.state, rollout.reason = "Undone", ""
        _say(rollout, f"undone: every node back on revision {rollout.from_revision}", now)
    kind = {"pause": "RolloutPaused", "resume": "RolloutResumed", "undo": "RolloutUndone"}[verb]
    append(session, CONTROLLER, now, kind, subject=deployment, data={"batch": rollout.batch})
    return rollout


def rollout_view(rollout: RolloutRow, row: DeploymentRow | None) -> dict[str, Any]:
    """A rollout as the API shows it."""
    order = _placed_nodes(row) if row is not None else []
    if rollout.state == "Succeeded":
        updated = order
    elif rollout.state in PINNED_BACK:
        updated = []
    else:
        updated = [n for n in rollout.updated if n in order]
    return {
        "deployment": rollout.deployment,
        "state": rollout.state,
        "from_revision": rollout.from_revision,
        "to_revision": rollout.to_revision,
        "from": describe(rollout.from_workload),
        "to": describe(rollout.to_workload),
        "batch": rollout.batch,
        "batches": rollout.batches,
        "nodes_updated": len(updated),
        "nodes_total": len(order),
        "updated_nodes": updated,
        "reason": rollout.reason,
        "message": rollout.message,
        "started_at": rollout.started_at.isoformat(),
        "updated_at": rollout.updated_at.isoformat(),
    }

"""The actual state of each assignment as the agent sees it: a phase and typed conditions
with reasons, as Kubernetes reports a pod's. Every change of either is also an outbox
record, so the controller's event log tells the story after an outage::

    status = WorkloadStatus(assignment, record=store_record)
    status.set("Progressing", "True", "Downloading", "model detector version 2")
    status.state()      # WorkloadState for the next heartbeat
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from edgetier.control import Assignment, Condition, WorkloadHealth, WorkloadState

__all__ = ["Phase", "Recorder", "WorkloadStatus", "node_degraded", "node_ready"]

HEALTH_REASONS = ("ErrorRate", "Latency")
"""Degraded reasons judged from the serving figures (they clear when the figures do)."""
_NOT_THE_WORKLOAD = ("ControllerUnreachable", "Recovered", "Healthy")

Phase = Literal["Pending", "Downloading", "Starting", "Running", "Failed", "Stopped"]
ConditionKind = Literal["Ready", "Progressing", "Degraded"]
Status = Literal["True", "False", "Unknown"]
Recorder = Callable[[str, str, dict[str, Any]], None]
"""``record(kind, subject, data)``: add a record to the outbox."""


class WorkloadStatus:
    """One deployment's share of this node: what it should be and where it stands."""

    def __init__(self, assignment: Assignment, *, record: Recorder) -> None:
        self.assignment = assignment
        self.phase: Phase = "Pending"
        self.endpoint: str | None = None
        self.conditions: dict[str, Condition] = {}
        self.health: WorkloadHealth | None = None
        self._record = record
        self.set("Ready", "False", "Pending", "not started yet")

    @property
    def deployment(self) -> str:
        return self.assignment.deployment

    def update(self, assignment: Assignment) -> bool:
        """Take a newer assignment of the same deployment; True if it changed."""
        changed = assignment != self.assignment
        if assignment.revision != self.assignment.revision:
            self.health = None  # the figures of what ran before say nothing of this
        self.assignment = assignment
        return changed

    def set(self, kind: ConditionKind, status: Status, reason: str, message: str = "") -> None:
        """Set a condition; a change of status or reason is recorded (a new message only
        updates it)."""
        held = self.conditions.get(kind)
        if held is not None and held.status == status and held.reason == reason:
            if held.message != message:
                self.conditions[kind] = held.model_copy(update={"message": message})
            return
        self.conditions[kind] = Condition(
            type=kind,
            status=status,
            reason=reason,
            message=message,
            last_transition=datetime.now(UTC),
        )
        self._record(
            "condition",
            self.deployment,
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "phase": self.phase,
                "generation": self.assignment.generation,
            },
        )

    def progress(self, reason: str, message: str = "") -> None:
        self.set("Progressing", "True", reason, message)

    def degrade(self, reason: str, message: str) -> None:
        self.set("Degraded", "True", reason, message)

    def judge(self, health: WorkloadHealth) -> None:
        """Take the serving figures; Degraded (``ErrorRate``, ``Latency``) while they
        break the assignment's limits, and no longer once they keep them."""
        self.health = health
        limits = self.assignment.limits
        verdict = limits.verdict(health) if limits is not None else None
        held = self.conditions.get("Degraded")
        if verdict is not None:
            self.degrade(*verdict)
        elif held is not None and held.status == "True" and held.reason in HEALTH_REASONS:
            self.set("Degraded", "False", "Healthy")

    def recover(self) -> None:
        if "Degraded" in self.conditions and self.conditions["Degraded"].status == "True":
            self.set("Degraded", "False", "Recovered")

    def to_phase(self, phase: Phase, reason: str = "", message: str = "") -> None:
        if phase == self.phase:
            return
        self.phase = phase
        self._record(
            "phase",
            self.deployment,
            {
                "phase": phase,
                "reason": reason,
                "message": message,
                "generation": self.assignment.generation,
            },
        )
        if phase == "Running":
            self.set("Ready", "True", reason or "Running", message)
            self.set("Progressing", "False", "Converged")
            self.recover()
        elif phase == "Failed":
            self.set("Ready", "False", reason or "Failed", message)
        else:
            self.set("Ready", "False", reason or phase, message)

    def state(self) -> WorkloadState:
        return WorkloadState(
            deployment=self.deployment,
            generation=self.assignment.generation,
            phase=self.phase,
            conditions=list(self.conditions.values()),
            endpoint=self.endpoint,
            revision=self.assignment.revision,
            health=self.health,
        )


def node_ready(workloads: Iterable[WorkloadStatus]) -> Condition:
    """The node's Ready condition from its workloads."""
    items = list(workloads)
    phases = [w.phase for w in items]
    failed = [w.deployment for w in items if w.phase == "Failed"]
    if failed:
        return Condition(
            type="Ready",
            status="False",
            reason="WorkloadFailed",
            message=f"failed: {', '.join(sorted(failed))}",
        )
    waiting = sum(1 for p in phases if p != "Running")
    if waiting:
        return Condition(
            type="Ready",
            status="False",
            reason="Converging",
            message=f"{waiting} of {len(phases)} workload(s) not running yet",
        )
    return Condition(
        type="Ready",
        status="True",
        reason="Converged",
        message=f"{len(phases)} workload(s) running" if phases else "nothing to run",
    )


def node_degraded(workloads: Iterable[WorkloadStatus]) -> Condition | None:
    """The node's Degraded condition from its workloads: True with ``LoadFailed``,
    ``ErrorRate`` or ``Latency`` and a message naming the workload; None when none is
    degraded (the controller rolls a rollout back on it; the agent never does)."""
    for status in sorted(workloads, key=lambda s: s.deployment):
        held = status.conditions.get("Degraded")
        if held is None or held.status != "True" or held.reason in _NOT_THE_WORKLOAD:
            continue
        reason = held.reason if held.reason in HEALTH_REASONS else "LoadFailed"
        return Condition(
            type="Degraded",
            status="True",
            reason=reason,
            message=f"workload {status.deployment}: {held.reason}: {held.message}",
        )
    return None

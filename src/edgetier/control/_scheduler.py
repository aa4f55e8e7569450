"""Placement: which nodes take a deployment, and why.

A policy has three named phases, as Kubernetes' scheduling framework does: ``filter``
rejects the nodes that cannot take the deployment (each rejection with a reason),
``score`` ranks the rest, ``bind`` turns the ranking into placements (spreading
replicas, splitting streams). :func:`schedule` runs them over every node and returns a
:class:`Decision` that explains every node; ``edgetier deploy explain`` prints it. Another
policy is one class::

    decision = schedule(deployment, nodes, model, policy=TierAwarePolicy())
    decision.placements          # [Placement(node="edge-1", replica=0, streams=30, ...)]
    print(decision.explain())    # which nodes were considered, why each was rejected or ranked
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from edgetier.control._resources import Deployment, ModelVersionInfo, Node, Placement

__all__ = ["Binding", "Decision", "NodeReport", "PlacementPolicy", "schedule"]


@dataclass
class NodeReport:
    """What a policy made of one node: rejected (with reasons) or scored."""

    node: str
    rejected: list[str] = field(default_factory=list)  # one sentence each
    score: float | None = None
    capacity_per_s: float | None = None  # inferences/s it can give this deployment
    notes: list[str] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        return not self.rejected

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "eligible": self.eligible,
            "rejected": list(self.rejected),
            "score": self.score,
            "capacity_per_s": self.capacity_per_s,
            "notes": list(self.notes),
        }


@dataclass
class Binding:
    """What ``bind`` returns: the placements, whether they carry the whole deployment, and
    why not when they do not."""

    placements: list[Placement]
    satisfied: bool
    message: str = ""


@dataclass
class Decision:
    """The outcome of scheduling one deployment."""

    deployment: str
    placements: list[Placement]
    reports: list[NodeReport]
    satisfied: bool
    message: str = ""

    def explain(self) -> str:
        """One line per node (ranked first, then rejected), then the placements."""
        lines = [f"deployment {self.deployment}: {len(self.reports)} node(s) considered"]
        ranked = sorted((r for r in self.reports if r.eligible), key=lambda r: -(r.score or 0.0))
        for rank, report in enumerate(ranked, 1):
            capacity = (
                f", {report.capacity_per_s:.1f} inferences/s for it"
                if report.capacity_per_s is not None
                else ""
            )
            notes = f" ({'; '.join(report.notes)})" if report.notes else ""
            lines.append(f"  #{rank} {report.node}: score {report.score:.3g}{capacity}{notes}")
        for report in self.reports:
            if not report.eligible:
                lines.append(f"  -  {report.node}: rejected: {'; '.join(report.rejected)}")
        if self.placements:
            lines.append("placed:")
            for p in self.placements:
                share = f", {p.streams} stream(s)" if p.streams else ""
                lines.append(f"  replica {p.replica} on {p.node}{share}: {p.reason}")
        state = "satisfied" if self.satisfied else "NOT satisfied"
        lines.append(f"{state}{': ' + self.message if self.message else ''}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "satisfied": self.satisfied,
            "message": self.message,
            "placements": [p.model_dump() for p in self.placements],
            "nodes": [r.as_dict() for r in self.reports],
        }


class PlacementPolicy(abc.ABC):
    """Filter, score, bind. Each phase sees one deployment; ``filter`` and ``score`` one
    node at a time, ``bind`` the eligible nodes best first."""

    @abc.abstractmethod
    def filter(
        self, deployment: Deployment, node: Node, model: ModelVersionInfo | None
    ) -> NodeReport:
        """A report for ``node``: ``rejected`` holds every reason it cannot take it."""

    @abc.abstractmethod
    def score(
        self,
        deployment: Deployment,
        node: Node,
        model: ModelVersionInfo | None,
        report: NodeReport,
    ) -> float:
        """Higher is better; called only for nodes that passed ``filter``."""

    @abc.abstractmethod
    def bind(
        self,
        deployment: Deployment,
        ranked: list[tuple[Node, NodeReport]],
        model: ModelVersionInfo | None,
    ) -> Binding:
        """Placements on the ranked nodes (best first)."""


def schedule(
    deployment: Deployment,
    nodes: list[Node],
    model: ModelVersionInfo | None,
    *,
    policy: PlacementPolicy | None = None,
) -> Decision:
    """Run the policy's phases over every node; a pure function of its arguments."""
    if policy is None:
        from edgetier.control._policy import TierAwarePolicy

        policy = TierAwarePolicy()
    reports = [policy.filter(deployment, node, model) for node in nodes]
    eligible = []
    for node, report in zip(nodes, reports, strict=True):
        if report.eligible:
            report.score = policy.score(deployment, node, model, report)
            eligible.append((node, report))
    eligible.sort(key=lambda pair: (-(pair[1].score or 0.0), pair[0].name))
    if not eligible:
        return Decision(deployment.name, [], reports, False, "no node can take it")
    binding = policy.bind(deployment, eligible, model)
    return Decision(
        deployment.name, binding.placements, reports, binding.satisfied, binding.message
    )

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

Scheduling is a pure function of its arguments: the controller runs it again whenever a
node is lost, drained or overheats, or the deployment changes, passing the placements in
force (``current``, by default ``deployment.status.placements``) so that a policy can keep
work where it still fits instead of moving it.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgetier.control._resources import Deployment, ModelVersionInfo, Node, Placement

__all__ = ["Binding", "Decision", "NodeReport", "PlacementPolicy", "schedule"]


@dataclass
class NodeReport:
    """What a policy made of one node: rejected (with reasons) or scored.

    ``rejected`` holds one sentence per reason, each starting with a stable word
    (``capacity: ...``) so that tools and tests can match it.
    """

    node: str
    rejected: list[str] = field(default_factory=list)  # one sentence each
    score: float | None = None
    capacity_per_s: float | None = None  # inferences/s it can give this deployment
    notes: list[str] = field(default_factory=list)
    total_per_s: float | None = None  # the whole node's rate for this model, for shares
    stream_limit: int | None = None  # streams it can take (pipelines); None: no limit known
    energy_j_per_inference: float | None = None
    basis: str = ""  # how capacity_per_s was found: measured, roofline estimate, unknown

    @property
    def eligible(self) -> bool:
        return not self.rejected

    @property
    def reason_words(self) -> list[str]:
        """The first word of each rejection (``offline``, ``capacity``, ...)."""
        return [r.split(":", 1)[0] for r in self.rejected]

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "eligible": self.eligible,
            "rejected": list(self.rejected),
            "score": self.score,
            "capacity_per_s": self.capacity_per_s,
            "total_per_s": self.total_per_s,
            "stream_limit": self.stream_limit,
            "energy_j_per_inference": self.energy_j_per_inference,
            "basis": self.basis,
            "notes": list(self.notes),
        }


@dataclass
class Binding:
    """What ``bind`` returns: the placements, whether they carry the whole deployment, and
    why not when they do not."""

    placements: list[Placement]
    satisfied: bool
    message: str = ""


def _rate(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}"


@dataclass
class Decision:
    """The outcome of scheduling one deployment."""

    deployment: str
    placements: list[Placement]
    reports: list[NodeReport]
    satisfied: bool
    message: str = ""
    summary: str = ""  # what was asked, in one line

    @property
    def ranked(self) -> list[NodeReport]:
        """The eligible nodes, best first (as ``bind`` saw them)."""
        eligible = [r for r in self.reports if r.eligible]
        return sorted(eligible, key=lambda r: (-(r.score or 0.0), r.node))

    def explain(self) -> str:
        """What was asked; the nodes ranked, then those rejected with every reason; the
        placements; whether the deployment is carried, and what is missing if not."""
        ranked = self.ranked
        rejected = [r for r in self.reports if not r.eligible]
        lines = [f"deployment {self.deployment}" + (f": {self.summary}" if self.summary else "")]
        lines.append(
            f"{len(self.reports)} node(s) considered: {len(ranked)} ranked, "
            f"{len(rejected)} rejected"
        )
        if ranked:
            lines.append("ranked, best first:")
        for rank, report in enumerate(ranked, 1):
            free = f"{_rate(report.capacity_per_s)} inferences/s free"
            if report.total_per_s is not None and report.capacity_per_s is not None:
                free = f"{report.capacity_per_s:.1f} of {report.total_per_s:.1f} inferences/s free"
            basis = f" ({report.basis})" if report.basis else ""
            lines.append(f"  {rank}. {report.node}: score {report.score or 0.0:.3f}, {free}{basis}")
            if report.notes:
                lines.append(f"       {'; '.join(report.notes)}")
        if rejected:
            lines.append("rejected:")
        for report in rejected:
            lines.append(f"  -  {report.node}: {report.rejected[0]}")
            lines.extend(f"       {reason}" for reason in report.rejected[1:])
        if self.placements:
            lines.append("placements:")
        for p in self.placements:
            share = f", {p.streams} stream(s)" if p.streams else ""
            lines.append(
                f"  replica {p.replica} on {p.node}{share}, {p.share * 100:.0f} % of the node: "
                f"{p.reason}"
            )
        state = "satisfied" if self.satisfied else "NOT satisfied"
        lines.append(f"{state}{': ' + self.message if self.message else ''}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "summary": self.summary,
            "satisfied": self.satisfied,
            "message": self.message,
            "placements": [p.model_dump() for p in self.placements],
            "nodes": [r.as_dict() for r in self.reports],
        }


class PlacementPolicy(abc.ABC):
    """Filter, score, bind. Each phase sees one deployment; ``filter`` and ``score`` one
    node at a time, ``bind`` the eligible nodes best first. The placements in force are
    ``deployment.status.placements``."""

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


def describe(deployment: Deployment) -> str:
    """What a deployment asks for, in one line (the head of ``explain``)."""
    spec = deployment.spec
    if spec.pipeline is not None:
        what = f"pipeline {spec.pipeline.name}"
        if spec.pipeline.model is not None:
            what += f" (model {spec.pipeline.model.name})"
    else:
        assert spec.model is not None
        what = f"model {spec.model.name}"
        if spec.model.version is not None:
            what += f" v{spec.model.version}"
        what += f", {spec.replicas} replica(s)"
    if spec.streams:
        what += (
            f", {spec.streams} stream(s) x {spec.fps:g} FPS = "
            f"{spec.streams * spec.fps:g} inferences/s"
        )
    elif spec.pipeline is not None and spec.replicas > 1:
        what += f", {spec.replicas} replica(s)"
    what += f", latency target {spec.latency_target_ms:g} ms"
    if spec.power_budget_w is not None:
        what += f", power budget {spec.power_budget_w:g} W per node"
    return what


def _nobody(reports: list[NodeReport]) -> str:
    if not reports:
        return "no node can take it: there are no nodes"
    words = Counter(word for r in reports for word in dict.fromkeys(r.reason_words))
    counts = ", ".join(f"{n} {word}" for word, n in words.most_common())
    return f"no node can take it: {len(reports)} rejected ({counts})"


def schedule(
    deployment: Deployment,
    nodes: list[Node],
    model: ModelVersionInfo | None,
    *,
    policy: PlacementPolicy | None = None,
    current: Sequence[Placement] | None = None,
) -> Decision:
    """Run the policy's phases over every node; a pure function of its arguments.

    ``current`` is the placements now in force (default: ``deployment.status.placements``);
    a policy keeps them where they still fit, so running this again moves only what must.
    """
    if policy is None:
        from edgetier.control._policy import TierAwarePolicy

        policy = TierAwarePolicy()
    if current is not None:
        status = deployment.status.model_copy(update={"placements": list(current)})
        deployment = deployment.model_copy(update={"status": status})
    summary = describe(deployment)
    reports = [policy.filter(deployment, node, model) for node in nodes]
    eligible = []
    for node, report in zip(nodes, reports, strict=True):
        if report.eligible:
            report.score = policy.score(deployment, node, model, report)
            eligible.append((node, report))
    eligible.sort(key=lambda pair: (-(pair[1].score or 0.0), pair[0].name))
    if not eligible:
        return Decision(deployment.name, [], reports, False, _nobody(reports), summary)
    binding = policy.bind(deployment, eligible, model)
    return Decision(
        deployment.name, binding.placements, reports, binding.satisfied, binding.message, summary
    )

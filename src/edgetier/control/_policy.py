"""The default placement policy: tier-aware, capacity-aware, power- and thermal-aware.

(The first version here filters by state, tier and labels and places replicas one per
node, best first; the scheduler's capacity, power, thermal and stream rules extend it.)
"""

from __future__ import annotations

from edgetier.control._resources import (
    Deployment,
    ModelVersionInfo,
    Node,
    Placement,
)
from edgetier.control._scheduler import Binding, NodeReport, PlacementPolicy

__all__ = ["TierAwarePolicy"]


def _condition(node: Node, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in node.status.conditions)


class TierAwarePolicy(PlacementPolicy):
    """Filters by node state, tier and labels; spreads replicas one per node."""

    def filter(
        self, deployment: Deployment, node: Node, model: ModelVersionInfo | None
    ) -> NodeReport:
        report = NodeReport(node.name)
        selector = deployment.spec.selector
        if _condition(node, "Offline"):
            report.rejected.append("offline: no heartbeat")
        if node.spec.unschedulable:
            report.rejected.append("unschedulable: the node is drained")
        if selector.tiers and node.spec.tier not in selector.tiers:
            report.rejected.append(
                f"tier: {node.spec.tier} is not one of {', '.join(selector.tiers)}"
            )
        for key, value in selector.labels.items():
            if node.metadata.labels.get(key) != value:
                report.rejected.append(f"labels: {key}={value} does not hold")
        return report

    def score(
        self,
        deployment: Deployment,
        node: Node,
        model: ModelVersionInfo | None,
        report: NodeReport,
    ) -> float:
        return 1.0 / (1 + len(node.status.placements))

    def bind(
        self,
        deployment: Deployment,
        ranked: list[tuple[Node, NodeReport]],
        model: ModelVersionInfo | None,
    ) -> Binding:
        wanted = deployment.spec.replicas
        placements = [
            Placement(node=node.name, replica=i, streams=deployment.spec.streams, reason="ranked")
            for i, (node, _) in enumerate(ranked[:wanted])
        ]
        satisfied = len(placements) == wanted
        message = "" if satisfied else f"{len(placements)} of {wanted} replica(s) placed"
        return Binding(placements, satisfied, message)

"""The default placement policy: tier-, capacity-, power- and thermal-aware.

**Filter.** A node is rejected for every reason that holds, each one sentence that starts
with its word and names the value and the limit:

============== =====================================================================
offline        condition ``Offline`` is True, or no heartbeat has arrived yet
unschedulable  the node is drained (``spec.unschedulable``)
tier           its tier is not in ``selector.tiers``
labels         a ``selector.labels`` pair does not hold
profile        its profile is not in ``selector.profiles``, or not in the catalog
accelerator    ``selector.accelerator`` is gpu on a CPU-only node, or cpu on a GPU one
thermal        condition ``Throttled`` is True, or it runs within ``thermal_margin_c``
               (5 °C) of its limit (``capacity.thermal_limit_c``, default 87 °C)
memory         the model's artifact is larger than the node's free memory
capacity       it cannot carry one unit (a stream, or a replica's share) within the
               latency target next to what is placed there already
power          it could at full power, but not within the power budget (the
               deployment's ``power_budget_w`` or the node's, the lower)
decoder        its video decoder has no room for one more of the pipeline's streams
============== =====================================================================

**Capacity.** The most inferences/s of the model the node carries within the latency
target, measured or the hardware advisor's roofline (:mod:`._capacity`), less the
``share`` of it each other deployment placed there takes (``node.status.load``). A
pipeline's unit is one stream (``fps`` inferences/s); its decoder takes ``streams``
(``capacity.streams``, else the profile's ``decode_1080p30_streams``) x 30 / ``fps``
streams. A served model's replica is one server instance (as a Triton instance group);
with ``streams`` given, the replicas share ``streams x fps`` evenly, else a replica
needs only to answer within the latency target.

**Score** (eligible nodes; higher is better)::

    score = 0.30 coverage + 0.30 headroom + 0.15 thermal + 0.15 efficiency + 0.10 spread
            + 1.0 if the node already runs the deployment (stability)

- coverage: the part of the deployment's demand the node can take (a pipeline's streams x
  fps, or one replica's share), 0-1: big demands go first to big nodes.
- headroom: the share of the node's capacity left free after it takes that part, 0-1.
- thermal: ``(limit - margin - temperature) / 40 °C``, clamped to 0-1.
- efficiency: ``1 / (1 + J per inference / 0.1 J)`` from the advisor's energy figure.
- spread: ``1 / (1 + other deployments on the node)``.
- unknown terms (no temperature, no cost for the model) count 0.5.

The stability bonus outweighs every other term together, so a run after a node is lost
moves only what was on that node.

**Bind.** A pipeline's streams go first where they already run (as many as still fit),
then over at least ``replicas`` nodes evenly, then best first, each node up to its stream
limit. Replicas go one per node, best first (those already placed stay), and two share a
node only when no other node fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from edgetier.control._capacity import NodeCapacity, node_capacity
from edgetier.control._resources import (
    Deployment,
    ModelVersionInfo,
    Node,
    PlacedLoad,
    Placement,
    Selector,
)
from edgetier.control._scheduler import Binding, NodeReport, PlacementPolicy

if TYPE_CHECKING:
    from edgetier.hardware import Catalog, DeviceProfile

__all__ = ["THERMAL_LIMIT_C", "THERMAL_MARGIN_C", "Demand", "TierAwarePolicy"]

THERMAL_LIMIT_C = 87.0
"""Where a Jetson module starts throttling (docs/thermal.md); a node states its own as
``capacity.thermal_limit_c`` (a GPU's NVML slowdown temperature, for example)."""
THERMAL_MARGIN_C = 5.0
_THERMAL_SPAN_C = 40.0  # temperature headroom that scores 1
_ENERGY_REF_J = 0.1  # J per inference that scores 0.5
_DECODE_FPS = 30.0  # the catalog's decoder figure is 1080p30 streams
_EPS = 1e-9


@dataclass(frozen=True)
class Demand:
    """What a deployment asks of the fleet, in inferences/s."""

    kind: Literal["pipeline", "model"]
    streams: int
    fps: float
    replicas: int
    latency_ms: float

    @classmethod
    def of(cls, deployment: Deployment) -> Demand:
        spec = deployment.spec
        kind: Literal["pipeline", "model"] = "pipeline" if spec.pipeline else "model"
        return cls(kind, spec.streams, spec.fps, spec.replicas, spec.latency_target_ms)

    @property
    def splits_streams(self) -> bool:
        """A pipeline with a stream count: its streams are split over nodes."""
        return self.kind == "pipeline" and self.streams > 0

    @property
    def total_per_s(self) -> float:
        return self.streams * self.fps

    def replica_streams(self) -> list[int]:
        """A served model's streams over its replicas, evenly, the larger shares first."""
        base, extra = divmod(self.streams, self.replicas)
        return [base + (1 if i < extra else 0) for i in range(self.replicas)]

    @property
    def unit_per_s(self) -> float:
        """The least a node must carry to take part: one stream, or one replica's share."""
        if self.splits_streams:
            return self.fps
        if self.kind == "model":
            return self.replica_streams()[0] * self.fps
        return 0.0

    def unit_text(self) -> str:
        if self.splits_streams:
            return f"one stream at {self.fps:g} FPS"
        return f"a replica's {self.replica_streams()[0]} stream(s) at {self.fps:g} FPS"


def _true(node: Node, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in node.status.conditions)


def _condition_text(node: Node, kind: str) -> str:
    for c in node.status.conditions:
        if c.type == kind and c.status == "True":
            return c.reason + (f": {c.message}" if c.message else "")
    return ""


def _tiers_text(selector: Selector) -> str:
    if not selector.tiers:
        return "any tier"
    return ("tiers " if len(selector.tiers) > 1 else "tier ") + ", ".join(selector.tiers)


def _others(deployment: Deployment, node: Node) -> dict[str, PlacedLoad]:
    """What the other deployments placed on the node take of it."""
    return {n: load for n, load in node.status.load.items() if n != deployment.name}


def _runs_it(deployment: Deployment, node: Node) -> bool:
    return any(p.node == node.name for p in deployment.status.placements)


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


class TierAwarePolicy(PlacementPolicy):
    """Filters by state, selector, hardware, heat, memory, capacity, power and decoder;
    scores by coverage, headroom, temperature, energy and spread; spreads replicas and
    splits streams. Subclass it and override one phase (or one weight) for another policy.
    """

    weights: ClassVar[dict[str, float]] = {
        "coverage": 0.30,
        "headroom": 0.30,
        "thermal": 0.15,
        "efficiency": 0.15,
        "spread": 0.10,
    }
    stay_bonus: ClassVar[float] = 1.0

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        thermal_limit_c: float = THERMAL_LIMIT_C,
        thermal_margin_c: float = THERMAL_MARGIN_C,
    ) -> None:
        self._catalog = catalog
        self.thermal_limit_c = thermal_limit_c
        self.thermal_margin_c = thermal_margin_c

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from edgetier.hardware import load_catalog

            self._catalog = load_catalog()
        return self._catalog

    # -- filter ------------------------------------------------------------------------

    def filter(
        self, deployment: Deployment, node: Node, model: ModelVersionInfo | None
    ) -> NodeReport:
        report = NodeReport(node.name)
        report.rejected.extend(self._state(node))
        report.rejected.extend(self._selector(deployment.spec.selector, node))
        profile = self._profile(node, report)
        if profile is None:
            return report
        report.rejected.extend(self._accelerator(deployment.spec.selector, node, profile))
        report.rejected.extend(self._thermal(node))
        if model is not None:
            report.rejected.extend(self._memory(deployment, node, profile, model))
        self._fit(deployment, node, profile, model, report)
        return report

    def _state(self, node: Node) -> list[str]:
        reasons = []
        if _true(node, "Offline"):
            reasons.append(f"offline: {node.name} is Offline ({_condition_text(node, 'Offline')})")
        elif node.status.last_heartbeat is None:
            reasons.append(f"offline: no heartbeat from {node.name} yet")
        if node.spec.unschedulable:
            reasons.append(f"unschedulable: {node.name} is drained, nothing new lands on it")
        return reasons

    def _selector(self, selector: Selector, node: Node) -> list[str]:
        reasons = []
        if selector.tiers and node.spec.tier not in selector.tiers:
            reasons.append(
                f"tier: {node.name} is in tier {node.spec.tier}, not one of "
                f"{', '.join(selector.tiers)}"
            )
        for key, value in selector.labels.items():
            actual = node.metadata.labels.get(key)
            if actual != value:
                has = f"it has {key}={actual}" if actual is not None else f"it has no {key} label"
                reasons.append(f"labels: {key}={value} does not hold on {node.name} ({has})")
        if selector.profiles and node.spec.profile not in selector.profiles:
            reasons.append(
                f"profile: {node.name} is a {node.spec.profile}, not one of "
                f"{', '.join(selector.profiles)}"
            )
        return reasons

    def _profile(self, node: Node, report: NodeReport) -> DeviceProfile | None:
        for device in self.catalog.devices:
            if device.id == node.spec.profile:
                return device
        report.rejected.append(
            f"profile: {node.spec.profile} (of {node.name}) is not in the hardware catalog "
            f"({len(self.catalog.devices)} profiles; `edgetier hw catalog` lists them)"
        )
        return None

    def _accelerator(self, selector: Selector, node: Node, profile: DeviceProfile) -> list[str]:
        if selector.accelerator == "gpu" and profile.kind == "cpu":
            return [
                f"accelerator: {node.name} is CPU-only ({profile.id}), the deployment needs a GPU"
            ]
        if selector.accelerator == "cpu" and profile.kind != "cpu":
            return [
                f"accelerator: {node.name} has a GPU ({profile.id}), the deployment asks for "
                "CPU-only nodes"
            ]
        return []

    def _thermal_limit_c(self, node: Node) -> float:
        return node.spec.capacity.get("thermal_limit_c", self.thermal_limit_c)

    def _thermal(self, node: Node) -> list[str]:
        if _true(node, "Throttled"):
            return [f"thermal: {node.name} is throttled ({_condition_text(node, 'Throttled')})"]
        temp = node.status.telemetry.temperature_c
        limit = self._thermal_limit_c(node)
        if temp is not None and temp >= limit - self.thermal_margin_c:
            return [
                f"thermal: {node.name} is at {temp:.1f} °C, within {self.thermal_margin_c:g} °C "
                f"of its {limit:g} °C limit"
            ]
        return []

    def _memory(
        self, deployment: Deployment, node: Node, profile: DeviceProfile, model: ModelVersionInfo
    ) -> list[str]:
        total_gb = node.spec.capacity.get("memory_gb", profile.memory_gb)
        if total_gb is None:
            return []
        used = node.status.telemetry.memory_used_bytes or 0
        if _runs_it(deployment, node) or deployment.name in node.status.placements:
            used = max(0, used - model.size_bytes)  # its own copy is in the figure
        free = total_gb * 1e9 - used
        if model.size_bytes > free:
            return [
                f"memory: {node.name} has {max(free, 0) / 1e9:.2f} GB free of {total_gb:g} GB, "
                f"the model needs {model.size_bytes / 1e9:.2f} GB"
            ]
        return []

    def _power_budget_w(self, deployment: Deployment, node: Node) -> tuple[float | None, str]:
        budgets = [
            (deployment.spec.power_budget_w, "the deployment's"),
            (node.spec.capacity.get("power_budget_w"), "the node's"),
        ]
        known = [(w, who) for w, who in budgets if w is not None]
        return min(known) if known else (None, "")

    def _fit(
        self,
        deployment: Deployment,
        node: Node,
        profile: DeviceProfile,
        model: ModelVersionInfo | None,
        report: NodeReport,
    ) -> None:
        """Capacity, power and decoder: what the node can give this deployment."""
        demand = Demand.of(deployment)
        budget, whose = self._power_budget_w(deployment, node)
        cap = node_capacity(
            model,
            profile,
            self.catalog,
            latency_ms=demand.latency_ms,
            power_budget_w=budget,
        )
        others = _others(deployment, node)
        unknown = [
            n for n in node.status.placements if n != deployment.name and n not in node.status.load
        ]
        if unknown:
            report.notes.append(f"load of {', '.join(unknown)} unknown, not counted")
        used = min(1.0, sum(load.share for load in others.values()))
        report.basis = cap.label
        stream_limit: float = math.inf
        if cap.per_s is None or cap.capped_per_s is None:
            report.notes.append(
                "capacity unknown: no measured throughput and no cost for this model"
                if model is not None
                else "capacity unknown: the model is not known"
            )
        else:
            total = cap.per_s
            free_full = max(0.0, (1.0 - used) * total)
            free = max(0.0, cap.capped_per_s - used * total)
            report.total_per_s = total
            report.capacity_per_s = free
            report.energy_j_per_inference = cap.energy_j_per_inference
            reason = self._shortage(
                demand, node, profile, cap, others, used, (free_full, free), (budget, whose)
            )
            if reason:
                report.rejected.append(reason)
            if demand.splits_streams:
                stream_limit = math.floor(free / demand.fps + _EPS)
        if demand.splits_streams:
            stream_limit = min(stream_limit, self._decoder(demand, node, profile, others, report))
            report.stream_limit = None if math.isinf(stream_limit) else int(stream_limit)

    def _shortage(
        self,
        demand: Demand,
        node: Node,
        profile: DeviceProfile,
        cap: NodeCapacity,
        others: dict[str, PlacedLoad],
        used: float,
        room: tuple[float, float],
        power_budget: tuple[float | None, str],
    ) -> str | None:
        """The capacity or power reason, if the node cannot carry one unit of the demand;
        ``room`` is what it has free at full power and within the budget."""
        assert cap.per_s is not None
        total, unit = cap.per_s, demand.unit_per_s
        (free_full, free), (budget, whose) = room, power_budget
        needs = (
            f"the deployment needs {unit:g} ({demand.unit_text()})"
            if unit > 0
            else "the deployment needs room for one replica"
        )
        if total <= 0:
            return (
                f"capacity: one inference of this model takes {cap.one_inference_ms:.1f} ms "
                f"on {node.name} ({cap.label}), over the {demand.latency_ms:g} ms latency target"
            )
        if free_full + _EPS < unit or free_full <= 0:
            taken = ""
            if used > 0:
                by = ", ".join(sorted(n for n, load in others.items() if load.share > 0))
                taken = f", {used * 100:.0f} % of it taken by {by}, {free_full:.1f} left"
            return (
                f"capacity: {node.name} carries {total:.1f} inferences/s of this model within "
                f"{demand.latency_ms:g} ms ({cap.label}){taken}, {needs}"
            )
        if free + _EPS < unit or free <= 0:
            if cap.lowest_mode_w is not None:
                return (
                    f"power: the lowest power mode of {node.name} ({profile.id}) draws "
                    f"{cap.lowest_mode_w:g} W, over {whose} {budget:g} W budget"
                )
            return (
                f"power: within {whose} {budget:g} W budget {node.name} carries {free:.1f} "
                f"inferences/s of this model, {needs} ({free_full:.1f} at full power)"
            )
        return None

    def _decoder(
        self,
        demand: Demand,
        node: Node,
        profile: DeviceProfile,
        others: dict[str, PlacedLoad],
        report: NodeReport,
    ) -> float:
        """The streams the node's decoder has room for (inf where no figure is known)."""
        decode = node.spec.capacity.get("streams", profile.decode_1080p30_streams)
        if decode is None:
            report.notes.append(f"decoder capacity of {profile.id} unknown, not checked")
            return math.inf
        limit = math.floor(decode * _DECODE_FPS / demand.fps + _EPS)
        taken = sum(load.streams for load in others.values())
        if limit - taken < 1:
            names = ", ".join(sorted(n for n, load in others.items() if load.streams))
            by = f", {taken} taken by {names}" if taken else ""
            report.rejected.append(
                f"decoder: {node.name} decodes {limit} stream(s) at {demand.fps:g} FPS "
                f"({decode:g} at 1080p30){by}, the deployment needs at least 1 more"
            )
        return max(0, limit - taken)

    # -- score -------------------------------------------------------------------------

    def score(
        self,
        deployment: Deployment,
        node: Node,
        model: ModelVersionInfo | None,
        report: NodeReport,
    ) -> float:
        demand = Demand.of(deployment)
        terms: dict[str, float] = {}
        free, total = report.capacity_per_s, report.total_per_s
        if free is None or not total:
            terms["coverage"] = terms["headroom"] = 0.5
        else:
            want = demand.total_per_s if demand.splits_streams else demand.unit_per_s
            can = free
            if report.stream_limit is not None:
                can = min(can, report.stream_limit * demand.fps)
            take = min(want, can)
            terms["coverage"] = take / want if want > 0 else 1.0
            terms["headroom"] = _clamp((free - take) / total)
        temp = node.status.telemetry.temperature_c
        limit = self._thermal_limit_c(node) - self.thermal_margin_c
        terms["thermal"] = 0.5 if temp is None else _clamp((limit - temp) / _THERMAL_SPAN_C)
        energy = report.energy_j_per_inference
        terms["efficiency"] = 0.5 if energy is None else 1.0 / (1.0 + energy / _ENERGY_REF_J)
        others = {n for n in node.status.placements if n != deployment.name}
        others |= set(_others(deployment, node))
        terms["spread"] = 1.0 / (1 + len(others))
        score = sum(self.weights.get(name, 0.0) * value for name, value in terms.items())
        stays = _runs_it(deployment, node)
        if stays:
            score += self.stay_bonus
        detail = [f"{name} {value:.2f}" for name, value in terms.items()]
        detail[2] += " (no reading)" if temp is None else f" ({temp:.0f} °C)"
        detail[3] += " (no figure)" if energy is None else f" ({energy:.3f} J/inference)"
        detail[4] += f" ({len(others)} other deployment(s))"
        if stays:
            detail.append(f"already runs it (+{self.stay_bonus:g})")
        report.notes.append(", ".join(detail))
        return score

    # -- bind --------------------------------------------------------------------------

    def bind(
        self,
        deployment: Deployment,
        ranked: list[tuple[Node, NodeReport]],
        model: ModelVersionInfo | None,
    ) -> Binding:
        demand = Demand.of(deployment)
        if demand.splits_streams:
            return self._bind_streams(deployment, demand, ranked)
        return self._bind_replicas(deployment, demand, ranked)

    def _shortfall(self, deployment: Deployment, ranked: list[tuple[Node, NodeReport]]) -> str:
        where = _tiers_text(deployment.spec.selector)
        return f"no more capacity in {where} ({len(ranked)} node(s) eligible)"

    def _bind_streams(
        self, deployment: Deployment, demand: Demand, ranked: list[tuple[Node, NodeReport]]
    ) -> Binding:
        before = {p.node: p for p in deployment.status.placements}
        limits = {
            node.name: demand.streams if r.stream_limit is None else r.stream_limit
            for node, r in ranked
        }
        got: dict[str, int] = {}
        left = demand.streams

        def give(name: str, most: int) -> None:
            nonlocal left
            k = max(0, min(most - got.get(name, 0), limits[name] - got.get(name, 0), left))
            if k:
                got[name] = got.get(name, 0) + k
                left -= k

        spread_over = min(demand.replicas, len(ranked))
        even = math.ceil(demand.streams / spread_over) if spread_over > 1 else demand.streams
        for node, _ in ranked:  # 1. keep what still fits where it runs
            if node.name in before:
                give(node.name, min(before[node.name].streams, even))
        for node, _ in ranked:  # 2. over at least `replicas` nodes, evenly
            give(node.name, even)
        for node, _ in ranked:  # 3. the rest best first
            give(node.name, demand.streams)

        placements = []
        taken_ids = {before[n].replica for n in got if n in before}
        free_ids = (i for i in range(len(ranked) + len(before)) if i not in taken_ids)
        for rank, (node, report) in enumerate(ranked, 1):
            k = got.get(node.name, 0)
            if not k:
                continue
            rate = k * demand.fps
            if node.name in before:
                replica, why = before[node.name].replica, "kept where it runs"
            else:
                replica, why = next(free_ids), f"ranked #{rank}"
            why += f", {rate:g} inferences/s"
            if report.stream_limit is not None:
                why += f", room for {limits[node.name]} stream(s)"
            share = rate / report.total_per_s if report.total_per_s else 0.0
            placements.append(
                Placement(
                    node=node.name, replica=replica, streams=k, share=min(1.0, share), reason=why
                )
            )
        placed = demand.streams - left
        if left == 0:
            return Binding(placements, True, f"{placed} stream(s) on {len(placements)} node(s)")
        message = (
            f"{placed} of {demand.streams} streams placed: {self._shortfall(deployment, ranked)}"
        )
        return Binding(placements, False, message)

    def _bind_replicas(
        self, deployment: Deployment, demand: Demand, ranked: list[tuple[Node, NodeReport]]
    ) -> Binding:
        shares = demand.replica_streams() if demand.kind == "model" else [0] * demand.replicas
        rates = [k * demand.fps for k in shares]
        free = {
            node.name: math.inf if r.capacity_per_s is None else r.capacity_per_s
            for node, r in ranked
        }
        rank_of = {node.name: i for i, (node, _) in enumerate(ranked, 1)}
        reports = {node.name: r for node, r in ranked}
        chosen: dict[int, tuple[str, str]] = {}

        def fits(name: str, replica: int) -> bool:
            return rates[replica] <= free[name] + _EPS and (rates[replica] > 0 or free[name] > 0)

        def take(replica: int, name: str, why: str) -> None:
            free[name] -= rates[replica]
            chosen[replica] = (name, why)

        for p in deployment.status.placements:  # 1. keep what still fits where it runs
            used = {name for name, _ in chosen.values()}
            known = p.replica < demand.replicas and p.replica not in chosen and p.node in free
            if known and p.node not in used and fits(p.node, p.replica):
                take(p.replica, p.node, "kept where it runs")
        for replica in range(demand.replicas):  # 2. one per node, best first
            used = {name for name, _ in chosen.values()}
            if replica in chosen:
                continue
            for node, _ in ranked:
                if node.name not in used and fits(node.name, replica):
                    take(replica, node.name, f"ranked #{rank_of[node.name]}")
                    break
        for replica in range(demand.replicas):  # 3. share a node only when nothing else fits
            if replica in chosen:
                continue
            for node, _ in ranked:
                if fits(node.name, replica):
                    take(
                        replica,
                        node.name,
                        f"ranked #{rank_of[node.name]}, shared: no other node fits",
                    )
                    break

        placements = []
        for replica in sorted(chosen):
            name, why = chosen[replica]
            rate = rates[replica]
            if rate:
                why += f", {rate:g} inferences/s ({shares[replica]} stream(s))"
            total = reports[name].total_per_s
            share = rate / total if total else 0.0
            placements.append(
                Placement(node=name, replica=replica, share=min(1.0, share), reason=why)
            )
        nodes = len({p.node for p in placements})
        if len(placements) == demand.replicas:
            return Binding(placements, True, f"{len(placements)} replica(s) on {nodes} node(s)")
        message = (
            f"{len(placements)} of {demand.replicas} replicas placed: "
            f"{self._shortfall(deployment, ranked)}"
        )
        return Binding(placements, False, message)

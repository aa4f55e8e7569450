"""Binding: replicas spread, streams split best first, placements kept where they still fit
when the controller schedules again, the explanation, and another policy as one class."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from scheduler_kit import applied, model, node, pipeline, served

from edgetier.control import (
    Binding,
    Condition,
    Decision,
    Deployment,
    ModelVersionInfo,
    Node,
    NodeReport,
    PlacedLoad,
    Placement,
    PlacementPolicy,
    TierAwarePolicy,
    schedule,
)

YOLO = model()
OFFLINE = Condition(type="Offline", status="True", reason="NodeLost", message="no heartbeat")
HOT = Condition(type="Throttled", status="True", reason="SwThermalSlowdown")


def _where(decision: Decision) -> list[tuple[str, int, int]]:
    return sorted((p.node, p.replica, p.streams) for p in decision.placements)


# -- replicas ---------------------------------------------------------------------------


def test_replicas_spread_one_per_node_best_first() -> None:
    nodes = [node("a", "t4"), node("b"), node("c", "jetson-agx-orin-64gb"), node("d")]
    decision = schedule(served(replicas=3), nodes, YOLO)
    assert decision.satisfied and decision.message == "3 replica(s) on 3 node(s)"
    assert [p.replica for p in decision.placements] == [0, 1, 2]
    assert len({p.node for p in decision.placements}) == 3
    ranked = [r.node for r in decision.ranked]
    assert [p.node for p in decision.placements] == ranked[:3]


def test_two_replicas_share_a_node_only_when_nothing_else_fits() -> None:
    decision = schedule(served(replicas=3), [node("a"), node("b")], YOLO)
    assert decision.satisfied
    nodes = [p.node for p in decision.placements]
    assert sorted(set(nodes)) == ["a", "b"] and len(nodes) == 3
    assert "shared: no other node fits" in decision.placements[2].reason


def test_replicas_with_a_rate_need_room_for_their_share() -> None:
    # 12 streams x 30 FPS over 2 replicas: 180/s each; an NX carries 235.8, so one each
    decision = schedule(served(replicas=2, streams=12), [node("a")], YOLO)
    assert not decision.satisfied
    assert (
        decision.message
        == "1 of 2 replicas placed: no more capacity in any tier (1 node(s) eligible)"
    )
    assert decision.placements[0].share == pytest.approx(180 / 235.8, rel=0.01)
    assert "180 inferences/s (6 stream(s))" in decision.placements[0].reason
    decision = schedule(served(replicas=2, streams=12), [node("a"), node("b")], YOLO)
    assert decision.satisfied and {p.node for p in decision.placements} == {"a", "b"}


def test_replicas_do_not_exceed_what_is_left_next_to_other_deployments() -> None:
    busy = node("a", load={"parking": PlacedLoad(share=0.5)})
    decision = schedule(served(replicas=1, streams=5), [busy, node("b")], YOLO)
    # 150/s fits the free NX (235.8), not the half-taken one (117.9)
    assert [p.node for p in decision.placements] == ["b"]
    assert decision.reports[0].reason_words == ["capacity"]


# -- streams ----------------------------------------------------------------------------


def test_streams_split_over_nodes_best_first_by_capacity() -> None:
    nodes = [node("nx-1"), node("nx-2"), node("orin", "jetson-agx-orin-64gb"), node("nx-3")]
    decision = schedule(pipeline(streams=40), nodes, YOLO)
    assert decision.satisfied
    by_node = {p.node: p.streams for p in decision.placements}
    reports = {r.node: r for r in decision.reports}
    # the AGX Orin ranks first (it covers most of the demand) and takes what its decoder allows
    assert decision.placements[0].node == "orin"
    assert by_node["orin"] == reports["orin"].stream_limit == 22
    for name, k in by_node.items():
        limit = reports[name].stream_limit
        assert limit is not None and k <= limit
    assert sum(by_node.values()) == 40
    # every node that got streams but the last is full: best first, as few nodes as possible
    assert [by_node[p.node] for p in decision.placements[:-1]] == [
        reports[p.node].stream_limit for p in decision.placements[:-1]
    ]


def test_pipeline_replicas_spread_the_streams_evenly() -> None:
    nodes = [node("a"), node("b"), node("c"), node("d")]
    decision = schedule(pipeline(streams=6, replicas=3), nodes, YOLO)
    assert sorted(p.streams for p in decision.placements) == [2, 2, 2]
    decision = schedule(pipeline(streams=6), nodes, YOLO)
    assert [p.streams for p in decision.placements] == [6]


def test_unsatisfied_streams_say_what_is_missing() -> None:
    decision = schedule(
        pipeline(streams=100, selector={"tiers": ["edge", "region"]}),
        [node("a"), node("b"), node("nano", "jetson-nano", "terminal")],
        YOLO,
    )
    placed = sum(p.streams for p in decision.placements)
    assert placed == 14
    assert decision.message == (
        "14 of 100 streams placed: no more capacity in tiers edge, region (2 node(s) eligible)"
    )
    assert not decision.satisfied


# -- scheduling again ---------------------------------------------------------------------


def _fleet() -> list[Node]:
    return [node(f"nx-{i}") for i in range(6)] + [node("orin", "jetson-agx-orin-64gb")]


def test_scheduling_an_unchanged_fleet_again_moves_nothing() -> None:
    d = pipeline(streams=40)
    nodes = _fleet()
    first = schedule(d, nodes, YOLO)
    again = schedule(d, applied(first, d, nodes), YOLO, current=first.placements)
    assert _where(again) == _where(first)
    assert all(p.reason.startswith("kept where it runs") for p in again.placements)


def test_a_better_node_joining_does_not_move_running_work() -> None:
    d = pipeline(streams=40)
    nodes = _fleet()
    first = schedule(d, nodes, YOLO)
    grown = [*applied(first, d, nodes), node("a100", "a100-sxm4-80gb", "region")]
    assert _where(schedule(d, grown, YOLO, current=first.placements)) == _where(first)
    # a fresh placement (no current placements) would take the A100 alone
    assert [p.node for p in schedule(d, grown, YOLO, current=[]).placements] == ["a100"]


@pytest.mark.parametrize(
    "change",
    [
        {"conditions": [OFFLINE]},
        {"conditions": [HOT]},
        {"unschedulable": True},
        {"temperature_c": 85.0},
    ],
    ids=["lost", "throttled", "drained", "hot"],
)
def test_only_the_work_of_a_failed_node_moves(change: dict[str, object]) -> None:
    d = pipeline(streams=40)
    nodes = _fleet()
    first = schedule(d, nodes, YOLO)
    running = applied(first, d, nodes)
    victim = first.placements[0].node
    failed = [
        node(n.name, n.spec.profile, **change)  # type: ignore[arg-type]
        if n.name == victim
        else n
        for n in running
    ]
    again = schedule(d, failed, YOLO, current=first.placements)
    assert again.satisfied and victim not in {p.node for p in again.placements}
    before = {p.node: (p.replica, p.streams) for p in first.placements}
    for p in again.placements:
        if p.node in before:  # survivors keep their replica id and at least their streams
            assert p.replica == before[p.node][0] and p.streams >= before[p.node][1]
    assert sum(p.streams for p in again.placements) == 40
    # the nodes that already run it are topped up before any other node takes a stream
    limits = {r.node: r.stream_limit for r in again.reports}
    if any(p.node not in before for p in again.placements):
        assert all(p.streams == limits[p.node] for p in again.placements if p.node in before)


def test_nodes_that_run_it_rank_first_and_are_topped_up_first() -> None:
    d = pipeline(streams=10)
    current = [Placement(node="zz-runs-it", replica=0, streams=3)]
    nodes = [node("a-spare"), node("b-spare"), node("zz-runs-it")]
    decision = schedule(d, nodes, YOLO, current=current)
    assert decision.ranked[0].node == "zz-runs-it"
    assert "already runs it (+1)" in decision.ranked[0].notes[-1]
    assert [(p.node, p.streams) for p in decision.placements] == [("zz-runs-it", 7), ("a-spare", 3)]


def test_served_replicas_stay_where_they_run() -> None:
    d = served(replicas=2)
    nodes = [node("a"), node("b"), node("c")]
    first = schedule(d, nodes, YOLO)
    lost = first.placements[1].node
    nodes = [node(n.name, conditions=[OFFLINE]) if n.name == lost else n for n in nodes]
    again = schedule(d, applied(first, d, nodes), YOLO, current=first.placements)
    assert again.placements[0] == first.placements[0].model_copy(
        update={"reason": "kept where it runs"}
    )
    assert again.placements[1].replica == 1 and again.placements[1].node not in {
        lost,
        first.placements[0].node,
    }


def test_current_defaults_to_the_deployment_status() -> None:
    d = pipeline(streams=40)
    first = schedule(d, _fleet(), YOLO)
    placed = d.model_copy(
        update={"status": d.status.model_copy(update={"placements": first.placements})}
    )
    grown = [*applied(first, d, _fleet()), node("a100", "a100-sxm4-80gb", "region")]
    assert _where(schedule(placed, grown, YOLO)) == _where(first)


# -- explanation ------------------------------------------------------------------------


def test_explain_names_every_node_and_the_placements() -> None:
    nodes = [
        node("nx-1"),
        node("nano", "jetson-nano", "terminal"),
        node("a100", "a100-sxm4-80gb", "region"),
        node("nx-2", temperature_c=60.0),
    ]
    decision = schedule(pipeline(streams=10, selector={"tiers": ["edge", "terminal"]}), nodes, YOLO)
    text = decision.explain()
    assert text.splitlines()[0] == (
        "deployment traffic: pipeline traffic-synthetic (model detector), 10 stream(s) x 30 FPS "
        "= 300 inferences/s, latency target 100 ms"
    )
    assert "4 node(s) considered: 2 ranked, 2 rejected" in text
    assert "ranked, best first:\n  1. nx-2: score" in text  # the cooler of two equal NX
    assert "of 235.8 inferences/s free (roofline estimate at int8, batch 8)" in text
    assert "thermal 0.55 (60 °C)" in text and "J/inference" in text
    assert "  -  nano: capacity: nano carries 17.2 inferences/s" in text
    assert "  -  a100: tier: a100 is in tier region, not one of edge, terminal" in text
    assert "placements:\n  replica 0 on nx-2, 7 stream(s), 89 % of the node: ranked #1" in text
    assert "thermal 0.50 (no reading)" in text
    assert text.endswith("satisfied: 10 stream(s) on 2 node(s)")
    data = json.loads(json.dumps(decision.as_dict()))
    assert data["satisfied"] and len(data["nodes"]) == 4
    assert data["nodes"][1]["rejected"][0].startswith("capacity:")
    assert data["placements"][0]["streams"] == 7


def test_no_nodes_at_all() -> None:
    decision = schedule(pipeline(), [], YOLO)
    assert not decision.satisfied and decision.message == "no node can take it: there are no nodes"


# -- another policy is one class ----------------------------------------------------------


class PackingPolicy(TierAwarePolicy):
    """Bin packing: the fullest node that still fits first, to leave whole nodes free."""

    weights: ClassVar[dict[str, float]] = {"coverage": 0.5, "headroom": -0.5}


class FirstNamedPolicy(PlacementPolicy):
    """A whole policy from scratch: any node whose name starts with the deployment's."""

    def filter(
        self, deployment: Deployment, node: Node, model: ModelVersionInfo | None
    ) -> NodeReport:
        report = NodeReport(node.name)
        if not node.name.startswith(deployment.name):
            report.rejected.append(f"labels: {node.name} does not start with {deployment.name}")
        return report

    def score(
        self, deployment: Deployment, node: Node, model: ModelVersionInfo | None, report: NodeReport
    ) -> float:
        return -len(node.name)

    def bind(
        self,
        deployment: Deployment,
        ranked: list[tuple[Node, NodeReport]],
        model: ModelVersionInfo | None,
    ) -> Binding:
        node, _ = ranked[0]
        return Binding([Placement(node=node.name, replica=0, reason="shortest name")], True)


def test_a_subclass_changes_the_ranking_and_nothing_else() -> None:
    nodes = [node("empty"), node("busy", load={"parking": PlacedLoad(share=0.6)})]
    d = served(streams=2)
    assert schedule(d, nodes, YOLO).placements[0].node == "empty"
    packed = schedule(d, nodes, YOLO, policy=PackingPolicy())
    assert packed.placements[0].node == "busy" and packed.satisfied
    # the filter is the default one: a node it cannot fit is still rejected
    full = node("full", load={"parking": PlacedLoad(share=0.99)})
    packed = schedule(d, [*nodes, full], YOLO, policy=PackingPolicy())
    assert packed.placements[0].node == "busy" and packed.reports[2].reason_words == ["capacity"]


def test_a_policy_from_scratch_runs_through_schedule() -> None:
    nodes = [node("traffic-long"), node("traffic-a"), node("other")]
    decision = schedule(pipeline(), nodes, YOLO, policy=FirstNamedPolicy())
    assert [p.node for p in decision.placements] == ["traffic-a"]
    assert decision.reports[2].reason_words == ["labels"]
    assert "traffic-a" in decision.explain()

"""Properties of the default policy over random fleets and deployments (hypothesis,
bounded): placements never exceed what a node has free and never land on a rejected node,
stream counts add up, and scheduling the result again moves nothing."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scheduler_kit import applied, model, node, pipeline, served

from edgetier.control import Deployment, Node, PlacedLoad, schedule
from edgetier.control._policy import Demand

PROFILES = ["jetson-nano", "jetson-xavier-nx", "jetson-agx-orin-64gb", "t4", "a2", "cpu-x86"]


@st.composite
def nodes(draw: Any) -> list[Node]:
    out = []
    for i in range(draw(st.integers(0, 7))):
        others = draw(
            st.dictionaries(
                st.sampled_from(["parking", "gate", "plates"]),
                st.builds(
                    PlacedLoad,
                    share=st.floats(0, 0.6, allow_nan=False),
                    streams=st.integers(0, 20),
                ),
                max_size=2,
            )
        )
        capacity = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "power_budget_w": st.sampled_from([12.0, 40.0, 100.0]),
                    "streams": st.integers(0, 40).map(float),
                },
            )
        )
        out.append(
            node(
                f"n{i}",
                draw(st.sampled_from(PROFILES)),
                draw(st.sampled_from(["terminal", "edge", "region"])),
                heartbeat=draw(st.integers(0, 5)) > 0,
                unschedulable=draw(st.integers(0, 9)) == 0,
                temperature_c=draw(st.none() | st.floats(30, 90, allow_nan=False)),
                capacity=capacity,
                load=others,
            )
        )
    return out


@st.composite
def deployments(draw: Any) -> Deployment:
    spec: dict[str, Any] = {
        "fps": draw(st.sampled_from([5.0, 15.0, 30.0, 60.0])),
        "replicas": draw(st.integers(1, 4)),
        "streams": draw(st.integers(0, 80)),
        "latency_target_ms": draw(st.sampled_from([30.0, 100.0, 250.0])),
        "selector": {
            "tiers": draw(st.lists(st.sampled_from(["terminal", "edge", "region"]), max_size=2))
        },
    }
    if draw(st.booleans()):
        spec["power_budget_w"] = draw(st.sampled_from([10.0, 30.0]))
    return pipeline(**spec) if draw(st.booleans()) else served(**spec)


costs = st.sampled_from(
    [
        model(),  # YOLOv8n at 640
        model(flops=4.1e9, weight_bytes=102_000_000, activation_bytes=90_000_000),  # ResNet-50
        model(flops=0.6e9, weight_bytes=14_000_000, activation_bytes=30_000_000),
        model(flops=None, weight_bytes=None, throughput={"t4": 900.0}),
        None,
    ]
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(fleet=nodes(), deployment=deployments(), info=costs)
def test_placements_fit_and_land_only_on_eligible_nodes(
    fleet: list[Node], deployment: Deployment, info: Any
) -> None:
    decision = schedule(deployment, fleet, info)
    reports = {r.node: r for r in decision.reports}
    demand = Demand.of(deployment)
    assert len({p.replica for p in decision.placements}) == len(decision.placements)
    for name in {p.node for p in decision.placements}:
        report = reports[name]
        assert report.eligible, report.rejected
        here = [p for p in decision.placements if p.node == name]
        if demand.splits_streams:
            assert len(here) == 1
            streams = here[0].streams
            assert streams >= 1
            if report.stream_limit is not None:
                assert streams <= report.stream_limit
            if report.capacity_per_s is not None:
                assert streams * demand.fps <= report.capacity_per_s + 1e-6
        elif report.capacity_per_s is not None:
            rates = (
                [k * demand.fps for k in demand.replica_streams()]
                if demand.kind == "model"
                else [0.0] * demand.replicas
            )
            assert sum(rates[p.replica] for p in here) <= report.capacity_per_s + 1e-6
        assert sum(p.share for p in here) <= 1.0 + 1e-9
    if demand.splits_streams:
        placed = sum(p.streams for p in decision.placements)
        assert placed <= demand.streams
        assert decision.satisfied == (placed == demand.streams)
    else:
        assert decision.satisfied == (len(decision.placements) == demand.replicas)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(fleet=nodes(), deployment=deployments(), info=costs)
def test_scheduling_the_result_again_moves_nothing(
    fleet: list[Node], deployment: Deployment, info: Any
) -> None:
    first = schedule(deployment, fleet, info)
    again = schedule(deployment, applied(first, deployment, fleet), info, current=first.placements)
    where = sorted((p.node, p.replica, p.streams) for p in first.placements)
    assert sorted((p.node, p.replica, p.streams) for p in again.placements) == where
    assert again.satisfied == first.satisfied

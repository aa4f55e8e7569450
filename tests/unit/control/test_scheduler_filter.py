"""Every rejection reason of the default policy: one node failing exactly that one, and the
sentence names the node, the value and the limit."""

from __future__ import annotations

import pytest
from scheduler_kit import model, node, pipeline, served

from edgetier.control import (
    Condition,
    Deployment,
    DeploymentStatus,
    ModelVersionInfo,
    Node,
    PlacedLoad,
    Placement,
    TierAwarePolicy,
    schedule,
)

YOLO = model()


def _rejections(deployment: Deployment, n: Node, info: ModelVersionInfo | None = YOLO) -> list[str]:
    return TierAwarePolicy().filter(deployment, n, info).rejected


CASES: list[tuple[str, Deployment, Node, list[str]]] = [
    (
        "offline",
        pipeline(),
        node(
            "nx",
            conditions=[
                Condition(
                    type="Offline",
                    status="True",
                    reason="NodeLost",
                    message="no heartbeat for 20 s",
                )
            ],
        ),
        ["offline: nx is Offline (NodeLost: no heartbeat for 20 s)"],
    ),
    ("offline", pipeline(), node("nx", heartbeat=False), ["offline: no heartbeat from nx yet"]),
    ("unschedulable", pipeline(), node("nx", unschedulable=True), ["nx is drained"]),
    (
        "tier",
        pipeline(selector={"tiers": ["region", "cloud"]}),
        node("nx"),
        ["tier: nx is in tier edge, not one of region, cloud"],
    ),
    (
        "labels",
        pipeline(selector={"labels": {"site": "berlin"}}),
        node("nx", labels={"site": "munich"}),
        ["labels: site=berlin does not hold on nx (it has site=munich)"],
    ),
    (
        "labels",
        pipeline(selector={"labels": {"site": "berlin"}}),
        node("nx"),
        ["(it has no site label)"],
    ),
    (
        "profile",
        pipeline(selector={"profiles": ["t4", "a2"]}),
        node("nx"),
        ["profile: nx is a jetson-xavier-nx, not one of t4, a2"],
    ),
    (
        "profile",
        pipeline(),
        node("odd", profile="abacus-9000"),
        ["profile: abacus-9000 (of odd) is not in the hardware catalog"],
    ),
    (
        "accelerator",
        pipeline(selector={"accelerator": "gpu"}),
        node("box", profile="cpu-x86"),
        ["accelerator: box is CPU-only (cpu-x86), the deployment needs a GPU"],
    ),
    (
        "accelerator",
        pipeline(selector={"accelerator": "cpu"}),
        node("nx"),
        ["accelerator: nx has a GPU (jetson-xavier-nx), the deployment asks for CPU-only"],
    ),
    (
        "thermal",
        pipeline(),
        node("nx", temperature_c=83.0),
        ["thermal: nx is at 83.0 °C, within 5 °C of its 87 °C limit"],
    ),
    (
        "thermal",
        pipeline(),
        node("nx", temperature_c=70.0, capacity={"thermal_limit_c": 74.0}),
        ["thermal: nx is at 70.0 °C, within 5 °C of its 74 °C limit"],
    ),
    (
        "thermal",
        pipeline(),
        node(
            "nx",
            conditions=[
                Condition(type="Throttled", status="True", reason="HwThermalSlowdown", message="")
            ],
        ),
        ["thermal: nx is throttled (HwThermalSlowdown)"],
    ),
    (
        "memory",
        pipeline(),
        node("nx", memory_used_bytes=7_000_000_000),
        ["memory: nx has 1.00 GB free of 8 GB, the model needs 2.00 GB"],
    ),
    (
        "memory",
        pipeline(),
        node("nx", capacity={"memory_gb": 1.5}),
        ["memory: nx has 1.50 GB free of 1.5 GB, the model needs 2.00 GB"],
    ),
    (
        "capacity",
        pipeline(streams=1, fps=30),
        node("nano", profile="jetson-nano", tier="terminal"),
        [
            "capacity: nano carries 17.2 inferences/s of this model within 100 ms "
            "(roofline estimate at fp16, batch 1), the deployment needs 30 (one stream at 30 FPS)"
        ],
    ),
    (
        "capacity",
        pipeline(streams=1, fps=10, latency_target_ms=20),
        node("nano", profile="jetson-nano", tier="terminal"),
        ["capacity: one inference of this model takes 46.6 ms on nano", "the 20 ms latency"],
    ),
    (
        "capacity",
        pipeline(streams=4),
        node("nx", load={"parking": PlacedLoad(share=0.9)}),
        ["capacity: nx carries 235.8 inferences/s", "90 % of it taken by parking, 23.6 left"],
    ),
    (
        "capacity",
        served(replicas=2, streams=12, fps=30),
        node("nano", profile="jetson-nano", tier="terminal"),
        ["the deployment needs 180 (a replica's 6 stream(s) at 30 FPS)"],
    ),
    (
        "power",
        served(streams=6, fps=30, power_budget_w=10),
        node("nx"),
        [
            "power: within the deployment's 10 W budget nx carries 157.2 inferences/s of this "
            "model, the deployment needs 180 (a replica's 6 stream(s) at 30 FPS) "
            "(235.8 at full power)"
        ],
    ),
    (
        "power",
        pipeline(),
        node("orin", profile="jetson-agx-orin-64gb", capacity={"power_budget_w": 12}),
        [
            "power: the lowest power mode of orin (jetson-agx-orin-64gb) draws 15 W, over the "
            "node's 12 W budget"
        ],
    ),
    (
        "decoder",
        pipeline(streams=2),
        node("nx", load={"parking": PlacedLoad(share=0.1, streams=32)}),
        [
            "decoder: nx decodes 32 stream(s) at 30 FPS (32 at 1080p30), 32 taken by parking, "
            "the deployment needs at least 1 more"
        ],
    ),
    (
        "decoder",
        pipeline(streams=2, fps=60),
        node("nx", capacity={"streams": 1}),
        ["decoder: nx decodes 0 stream(s) at 60 FPS (1 at 1080p30)"],
    ),
]


@pytest.mark.parametrize(
    ("word", "deployment", "n", "phrases"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_each_reason_alone(word: str, deployment: Deployment, n: Node, phrases: list[str]) -> None:
    info = YOLO if word != "memory" else model(size_bytes=2_000_000_000)
    reasons = _rejections(deployment, n, info)
    assert [r.split(":")[0] for r in reasons] == [word], reasons
    for phrase in phrases:
        assert phrase in reasons[0]
    # the same node is rejected by `schedule`, with the reason in the explanation
    decision = schedule(deployment, [n], info)
    assert not decision.satisfied and decision.placements == []
    assert decision.message == f"no node can take it: 1 rejected (1 {word})"
    assert reasons[0] in decision.explain()


def test_every_contract_reason_is_covered() -> None:
    words = {c[0] for c in CASES}
    assert words == {
        "offline", "unschedulable", "tier", "labels", "profile", "accelerator",
        "memory", "power", "thermal", "capacity", "decoder",
    }  # fmt: skip


def test_a_node_is_rejected_for_every_reason_that_holds() -> None:
    n = node("nano", profile="jetson-nano", tier="terminal", unschedulable=True, temperature_c=90)
    reasons = _rejections(pipeline(selector={"tiers": ["edge"]}), n)
    assert [r.split(":")[0] for r in reasons] == ["unschedulable", "tier", "thermal", "capacity"]


def test_thermal_margin_and_limit_are_settings() -> None:
    n = node("nx", temperature_c=80.0)
    assert _rejections(pipeline(), n) == []
    strict = TierAwarePolicy(thermal_margin_c=10.0).filter(pipeline(), n, YOLO)
    assert strict.reason_words == ["thermal"]
    cool = TierAwarePolicy(thermal_limit_c=100.0).filter(
        pipeline(), node("nx", temperature_c=90), YOLO
    )
    assert cool.eligible


def test_node_power_budget_and_deployment_budget_take_the_lower() -> None:
    # 6 streams x 30 FPS need 180/s: the NX carries 235.8 at 15 W, 157.2 in its 10 W mode
    n = node("nx", capacity={"power_budget_w": 10})
    assert _rejections(served(streams=6, fps=30), n)[0].startswith(
        "power: within the node's 10 W budget"
    )
    assert _rejections(served(streams=6, fps=30, power_budget_w=20), n)[0].startswith(
        "power: within the node's 10 W budget"
    )
    assert _rejections(served(streams=6, fps=30), node("nx", capacity={"power_budget_w": 15})) == []


def test_memory_of_a_node_already_running_the_model_counts_its_own_copy_as_free() -> None:
    big = model(size_bytes=2_000_000_000)
    d = pipeline()
    n = node("nx", memory_used_bytes=7_000_000_000)
    assert TierAwarePolicy().filter(d, n, big).reason_words == ["memory"]
    running = d.model_copy(
        update={"status": DeploymentStatus(placements=[Placement(node="nx", replica=0)])}
    )
    assert TierAwarePolicy().filter(running, n, big).eligible


def test_unknown_capacity_is_not_a_rejection() -> None:
    report = TierAwarePolicy().filter(pipeline(streams=50), node("nx"), None)
    assert report.eligible and report.capacity_per_s is None
    assert "capacity unknown: the model is not known" in report.notes
    # the decoder still bounds the streams: 32 at 1080p30
    assert report.stream_limit == 32
    no_cost = model(flops=None, weight_bytes=None, activation_bytes=None)
    report = TierAwarePolicy().filter(pipeline(), node("nx"), no_cost)
    assert report.eligible and report.basis == "unknown"


def test_measured_throughput_replaces_the_estimate() -> None:
    nano = node("nano", profile="jetson-nano", tier="terminal")
    measured = model(throughput={"jetson-nano": 60.0})
    report = TierAwarePolicy().filter(pipeline(streams=1, fps=30), nano, measured)
    assert report.eligible and report.basis == "measured"
    # the measured rate scales the roofline (60/s saturated), which then applies the 80 % limit
    assert report.total_per_s == pytest.approx(0.8 * 60.0, rel=0.01)
    only_measured = model(flops=None, weight_bytes=None, throughput={"jetson-nano": 25.0})
    report = TierAwarePolicy().filter(pipeline(streams=1, fps=30), nano, only_measured)
    assert report.reason_words == ["capacity"] and "carries 20.0 inferences/s" in report.rejected[0]
    assert "(measured)" in report.rejected[0]

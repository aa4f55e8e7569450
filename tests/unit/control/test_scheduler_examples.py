"""The architecture's examples, with YOLOv8n's cost counted from its real graph.

A 30 FPS YOLO-class detector fits a Jetson Xavier NX and not a Jetson Nano; 100 streams at
30 FPS need the region tier (an A100) or several edge nodes. The figures are the hardware
advisor's roofline estimates (no measured throughput is given).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scheduler_kit import model, node, pipeline, yolov8n

from edgetier.control import TierAwarePolicy, schedule


def test_yolov8n_is_counted_as_ultralytics_publishes_it() -> None:
    info = yolov8n()
    assert info.flops is not None and info.weight_bytes is not None
    assert info.flops == pytest.approx(8.7e9, rel=0.03)  # Ultralytics: 8.7 GFLOPs at 640
    # 3,151,904 parameters (3.2 M) and the decode's anchor points and strides, in FP32
    assert info.weight_bytes == 4 * (3_151_904 + 3 * 8400)
    # the defaults the other scheduler tests use are this graph's figures
    default = model()
    assert default.flops == pytest.approx(info.flops, rel=1e-3)
    assert default.weight_bytes == info.weight_bytes
    assert default.activation_bytes == info.activation_bytes


def test_30_fps_detector_fits_xavier_nx_not_nano() -> None:
    nodes = [node("nano", "jetson-nano", "terminal"), node("nx", "jetson-xavier-nx", "edge")]
    decision = schedule(pipeline(streams=1, fps=30), nodes, yolov8n())
    assert decision.satisfied
    assert [(p.node, p.streams) for p in decision.placements] == [("nx", 1)]
    nano, nx = decision.reports
    assert nano.reason_words == ["capacity"]
    assert "nano carries 17.2 inferences/s of this model within 100 ms" in nano.rejected[0]
    assert "the deployment needs 30 (one stream at 30 FPS)" in nano.rejected[0]
    assert nx.eligible and nx.total_per_s is not None and nx.total_per_s > 200


def test_nano_carries_the_detector_at_a_lower_frame_rate() -> None:
    """The same Nano takes the detector at 15 FPS: the limit is the rate, not the model."""
    decision = schedule(pipeline(streams=1, fps=15), [node("nano", "jetson-nano")], yolov8n())
    assert decision.satisfied and decision.placements[0].node == "nano"


def test_100_streams_fit_one_a100_in_the_region_tier() -> None:
    nodes = [
        node("nx-1", "jetson-xavier-nx", "edge"),
        node("nx-2", "jetson-xavier-nx", "edge"),
        node("a100", "a100-sxm4-80gb", "region"),
    ]
    decision = schedule(
        pipeline(streams=100, fps=30, selector={"tiers": ["edge", "region"]}), nodes, yolov8n()
    )
    assert decision.satisfied
    assert [(p.node, p.streams) for p in decision.placements] == [("a100", 100)]
    assert decision.placements[0].share == pytest.approx(3000 / decision.reports[2].total_per_s)


def test_100_streams_do_not_fit_two_edge_nodes() -> None:
    nodes = [node("nx-1"), node("nx-2"), node("a100", "a100-sxm4-80gb", "region")]
    decision = schedule(pipeline(streams=100, selector={"tiers": ["edge"]}), nodes, yolov8n())
    assert not decision.satisfied
    placed = sum(p.streams for p in decision.placements)
    assert {p.node for p in decision.placements} == {"nx-1", "nx-2"}
    assert decision.message == (
        f"{placed} of 100 streams placed: no more capacity in tier edge (2 node(s) eligible)"
    )
    assert "tier: a100 is in tier region, not one of edge" in decision.reports[2].rejected


def test_100_streams_split_over_several_edge_nodes() -> None:
    nodes = [node(f"nx-{i:02d}") for i in range(20)]
    decision = schedule(pipeline(streams=100, selector={"tiers": ["edge"]}), nodes, yolov8n())
    assert decision.satisfied
    per_node = [p.streams for p in decision.placements]
    assert sum(per_node) == 100
    limit = decision.reports[0].stream_limit
    assert limit is not None and 1 < limit < 100
    # best first, each node filled to what it carries: as few nodes as that allows
    assert len(per_node) == -(-100 // limit)
    assert all(k == limit for k in per_node[:-1])
    assert len({p.node for p in decision.placements}) == len(per_node)


def test_the_table_in_docs_is_what_the_scheduler_computes() -> None:
    doc = Path(__file__).parents[3] / "docs" / "scheduling.md"
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in doc.read_text(encoding="utf-8").splitlines()
        if re.match(r"\| (jetson-|t4 |l4 |a100-)", line)
    ]
    assert len(rows) == 8
    info = yolov8n()
    for profile, tier, _, carries, streams, joules in rows:
        report = TierAwarePolicy().filter(
            pipeline(streams=1000, fps=30), node("x", profile, tier), info
        )
        assert report.total_per_s == pytest.approx(float(carries), abs=0.05), profile
        assert report.stream_limit == int(streams.split(":")[0].split(" ")[0]), profile
        assert report.energy_j_per_inference == pytest.approx(float(joules), abs=5e-4), profile

"""peak_rate: the most a device carries within a latency target is the edge of what
``estimate`` says it carries, for every catalog device."""

from __future__ import annotations

import pytest

from edgetier.hardware import ModelCost, Workload, candidates, estimate, load_catalog, peak_rate

COSTS = {
    "yolov8n-640": ModelCost(8.79e9, 4.39e9, 12_708_416, 484_729_600),
    "resnet50": ModelCost(8.2e9, 4.1e9, 102_000_000, 90_000_000),
    "tiny": ModelCost(2e7, 1e7, 400_000, 2_000_000),
}


@pytest.mark.parametrize("latency_ms", [15.0, 100.0, 400.0])
@pytest.mark.parametrize("cost_name", sorted(COSTS))
def test_peak_rate_is_the_edge_of_what_estimate_carries(cost_name: str, latency_ms: float) -> None:
    cost = COSTS[cost_name]
    for cand in candidates(load_catalog()):
        rate, verdict = peak_rate(cost, cand, latency_ms)
        above = estimate(cost, cand, Workload(1, max(rate, 1e-3) * 1.02, latency_ms))
        assert not above.carries, cand.profile.id
        if rate > 0:
            assert verdict.carries and verdict.utilisation == pytest.approx(0.8, rel=1e-6)
            assert estimate(cost, cand, Workload(1, rate, latency_ms)).carries
        else:
            assert not verdict.carries


def test_latency_below_one_inference_carries_nothing() -> None:
    nano = next(c for c in candidates(load_catalog()) if c.profile.id == "jetson-nano")
    rate, verdict = peak_rate(COSTS["yolov8n-640"], nano, 20.0)
    assert rate == 0.0 and not verdict.carries
    assert "over the 20 ms latency target" in verdict.explain()


def test_power_budget_lowers_the_peak_and_a_mode_above_it_gives_zero() -> None:
    cands = {c.profile.id: c for c in candidates(load_catalog())}
    cost = COSTS["yolov8n-640"]
    full, _ = peak_rate(cost, cands["jetson-xavier-nx"], 100.0)
    capped, verdict = peak_rate(cost, cands["jetson-xavier-nx"], 100.0, power_budget_w=10)
    assert 0 < capped < full and verdict.carries
    assert any("nvpmodel mode MODE_10W" in r for r in verdict.reasons)
    none, verdict = peak_rate(cost, cands["jetson-agx-orin-64gb"], 100.0, power_budget_w=12)
    assert none == 0.0 and "lowest power mode draws 15 W" in verdict.explain()


def test_correction_scales_the_peak() -> None:
    t4 = next(c for c in candidates(load_catalog()) if c.profile.id == "t4")
    base, _ = peak_rate(COSTS["resnet50"], t4, 1000.0)
    half, verdict = peak_rate(COSTS["resnet50"], t4, 1000.0, correction=0.5, basis="measured")
    assert half == pytest.approx(base / 2, rel=0.05) and verdict.basis == "measured"

from __future__ import annotations

from edgetier.hardware._thermal import ThermalGovernor, ThermalModel, simulate


def test_first_order_model_approaches_steady_state() -> None:
    m = ThermalModel.passive_jetson_nano(ambient_c=40.0)
    assert m.steady_c(10.0) == 40.0 + 10.0 * m.r_th_c_per_w
    temp = 40.0
    for _ in range(10_000):
        temp = m.step_c(temp, 5.0, 1.0)
    assert abs(temp - m.steady_c(5.0)) < 0.01
    tau = m.r_th_c_per_w * m.c_th_j_per_c
    one_tau = m.step_c(40.0, 5.0, tau)
    assert abs((one_tau - 40.0) / (m.steady_c(5.0) - 40.0) - 0.632) < 0.01


def test_governor_steps_down_and_back_up_with_hysteresis() -> None:
    gov = ThermalGovernor(target_c=80.0, hysteresis_c=5.0, hold_s=30.0, min_dwell_s=10.0)
    assert gov.observe(0.0, 70.0) is None
    down = gov.observe(20.0, 81.0)
    assert down is not None and down.action == "step_down" and gov.level == 1
    assert gov.observe(25.0, 90.0) is None  # dwell: give the last step time to act
    assert gov.observe(40.0, 77.0) is None  # inside the hysteresis band: hold
    assert gov.observe(50.0, 74.0) is None  # cool, but not yet for hold_s
    up = gov.observe(80.0, 74.0)
    assert up is not None and up.action == "step_up" and gov.level == 0
    assert [e.action for e in gov.events] == ["step_down", "step_up"]


def test_passive_jetson_at_40c_with_and_without_governor() -> None:
    m = ThermalModel.passive_jetson_nano(ambient_c=40.0)
    free = simulate(m, None, 3600)
    managed = simulate(m, ThermalGovernor(), 3600)
    assert 0.7 < free.mean_throughput_fraction < 0.9  # SoC throttling saw-tooth loses ~20 %
    assert managed.mean_high_priority_fraction == 1.0 > free.mean_high_priority_fraction
    assert managed.mean_throughput_fraction >= free.mean_throughput_fraction
    assert managed.events and all(e.reason for e in managed.events)
    cool = simulate(ThermalModel.passive_jetson_nano(ambient_c=20.0), ThermalGovernor(), 3600)
    assert cool.mean_throughput_fraction > 0.99 and not cool.events

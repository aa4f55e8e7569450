from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import edgetier.hardware
from edgetier.bench import EnergyProbe
from edgetier.bench._energy import energy_label
from edgetier.hardware import integrate_power


class TraceMeter:
    """An energy meter that replays a synthetic power trace on each start/stop."""

    def __init__(self, times_s: np.ndarray, power_w: np.ndarray, *, estimated: bool) -> None:
        self.times_s, self.power_w = times_s, power_w
        self.source = "estimate:test" if estimated else "rapl"
        self.estimated = estimated
        self.closed = False

    def start(self) -> None:
        pass

    def stop(self) -> float:
        return integrate_power(list(self.times_s), list(self.power_w))

    def close(self) -> None:
        self.closed = True


def _use(monkeypatch: pytest.MonkeyPatch, meter: Any) -> None:
    monkeypatch.setattr(edgetier.hardware, "open_energy_meter", lambda device=None: meter)


@pytest.mark.parametrize("estimated", [False, True])
def test_energy_per_inference_from_power_trace(
    monkeypatch: pytest.MonkeyPatch, estimated: bool
) -> None:
    t = np.linspace(0, 10, 1001)
    p = 20 + 5 * np.sin(2 * np.pi * t / 10)  # one full period: mean 20 W -> 200 J
    meter = TraceMeter(t, p, estimated=estimated)
    _use(monkeypatch, meter)
    probe = EnergyProbe()
    probe.start()
    reading = probe.stop()
    probe.close()
    assert reading is not None
    assert reading.joules == pytest.approx(200.0, rel=1e-3)
    assert reading.per_inference(400) == pytest.approx(0.5, rel=1e-3)
    assert reading.per_inference(0) is None
    assert reading.estimated is estimated
    assert meter.closed
    label = energy_label(reading.source, reading.estimated)
    assert label.startswith("estimated" if estimated else "measured")


def test_step_trace_integrates_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 W for 2 s then 30 W for 1 s (samples at the edges): 20 + 30 J plus the ramp's 20 J.
    meter = TraceMeter(
        np.array([0.0, 2.0, 3.0, 4.0]), np.array([10.0, 10.0, 30.0, 30.0]), estimated=False
    )
    _use(monkeypatch, meter)
    probe = EnergyProbe()
    reading = probe.stop()
    assert reading is not None and reading.joules == pytest.approx(20 + 20 + 30)


def test_unavailable_meter_reports_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(device: str | None = None) -> Any:
        raise OSError("no sensor")

    monkeypatch.setattr(edgetier.hardware, "open_energy_meter", broken)
    probe = EnergyProbe()
    assert probe.unavailable is not None and "no sensor" in probe.unavailable
    probe.start()
    assert probe.stop() is None


def test_disabled_probe_measures_nothing() -> None:
    probe = EnergyProbe(enabled=False)
    assert probe.stop() is None and probe.unavailable
    assert energy_label(None, False) == "n/a"

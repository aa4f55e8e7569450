"""What a node says it is and how it is doing: measured here, or presented for a catalog
profile and marked so."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edgetier.agent._settings import AgentSettings
from edgetier.agent._telemetry import MeasuredTelemetry, PresentedTelemetry, identify
from edgetier.errors import ConfigError
from edgetier.hardware import TelemetrySample, get_profile
from edgetier.hardware._nvml import GpuReading


def _settings(**extra: Any) -> AgentSettings:
    return AgentSettings(controller="http://c:1", name="n", store=Path("/tmp/x"), **extra)


def test_a_presented_profile_gives_its_tier_and_an_unknown_one_is_refused() -> None:
    identity = identify(_settings(profile="jetson-nano"))
    assert (identity.profile, identity.tier, identity.presented) == (
        "jetson-nano",
        "terminal",
        True,
    )
    assert identify(_settings(profile="t4", tier="region")).tier == "region"
    with pytest.raises(ConfigError, match="--profile: hardware profile 'nope'"):
        identify(_settings(profile="nope"))


def test_presented_telemetry_is_plausible_for_the_device_and_marked_simulated() -> None:
    device = get_profile("jetson-agx-orin-64gb")
    telemetry = PresentedTelemetry(device)
    summary = telemetry.sample()
    assert summary.simulated is True
    assert summary.utilisation is not None and 0 <= summary.utilisation <= 1
    assert summary.power_w is not None and device.tdp_w is not None
    assert 0 <= summary.power_w <= device.tdp_w
    assert summary.temperature_c is not None and 35 <= summary.temperature_c <= 65
    assert [c.reason for c in telemetry.conditions()] == ["Simulated"]


def _gpu(util: float, reasons: list[str]) -> GpuReading:
    return GpuReading(
        index=0,
        name="NVIDIA T4",
        uuid="GPU-0",
        utilization_pct=util,
        memory_utilization_pct=None,
        memory_used_bytes=2**30,
        memory_total_bytes=16 * 2**30,
        power_w=50.0,
        power_limit_w=70.0,
        power_management_limit_w=70.0,
        temperature_c=71.0,
        sm_clock_mhz=1000,
        memory_clock_mhz=5000,
        throttle_reasons=reasons,
        energy_j=None,
    )


class _Sampler:
    def __init__(self, gpus: list[GpuReading]) -> None:
        self.gpus = gpus

    def sample(self) -> TelemetrySample:
        return TelemetrySample(
            time_s=time.time(),
            cpu_percent=20.0,
            cpu_per_core_percent=[20.0],
            memory_used_bytes=4 * 2**30,
            memory_total_bytes=8 * 2**30,
            gpus=self.gpus,
        )


def test_measured_telemetry_reads_the_gpu_and_reports_thermal_slowdown() -> None:
    telemetry = MeasuredTelemetry(_Sampler([_gpu(80.0, ["sw_power_cap"])]))
    summary = telemetry.sample()
    assert summary.simulated is False
    assert (summary.utilisation, summary.power_w) == (0.8, 50.0)
    assert summary.memory_used_bytes == 2**30 and summary.temperature_c == 71.0
    assert telemetry.conditions()[0].status == "False"  # a power cap at load is normal
    hot = MeasuredTelemetry(_Sampler([_gpu(99.0, ["hw_thermal_slowdown"])]))
    hot.sample()
    throttled = hot.conditions()[0]
    assert (throttled.type, throttled.status) == ("Throttled", "True")
    assert "hw_thermal_slowdown" in throttled.message


def test_without_a_gpu_the_cpu_load_and_host_memory_are_reported() -> None:
    summary = MeasuredTelemetry(_Sampler([])).sample()
    assert summary.utilisation == 0.2 and summary.memory_used_bytes == 4 * 2**30

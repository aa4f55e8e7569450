from __future__ import annotations

import pytest
from fake_nvml import FakeNvml
from prometheus_client import CollectorRegistry, generate_latest

from edgetier.hardware import (
    TelemetryCollector,
    TelemetrySampler,
    integrate_power,
    load_catalog,
    open_energy_meter,
)
from edgetier.hardware._energy import PowerIntegrator, SampledPowerMeter


def test_integrate_power_on_synthetic_curves() -> None:
    assert integrate_power([0, 1, 2], [5, 5, 5]) == 10.0
    assert integrate_power([0, 2], [0, 10]) == 10.0  # a ramp: area of the triangle
    assert integrate_power([0, 0.5, 3], [4, 4, 4]) == pytest.approx(12.0)
    with pytest.raises(ValueError, match="2 samples"):
        integrate_power([0, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="must not decrease"):
        _backwards()


def _backwards() -> None:
    p = PowerIntegrator()
    p.add(2.0, 1.0)
    p.add(1.0, 1.0)


def test_sampled_meter_integrates_with_a_fake_clock() -> None:
    clock = iter([0.0, 1.0, 3.0])
    powers = iter([10.0, 10.0, 20.0])
    meter = SampledPowerMeter(
        "test", lambda: next(powers), interval_s=60, clock=lambda: next(clock)
    )
    meter.start()
    meter._sample()  # one tick of the poller, t=1
    assert meter.stop() == 10.0 + 30.0
    meter.close()


def test_meter_sources_in_order(tree, empty_host) -> None:
    fake = FakeNvml("t4.json")
    nv = open_energy_meter(paths=tree("x86-rapl"), nvml=fake)
    assert nv.source == "nvml" and not nv.estimated
    nv.start()
    fake.rec["devices"][0]["total_energy_mj"] += 2500
    assert nv.stop() == 2.5
    jet = open_energy_meter(
        paths=tree("jetson-nano"), nvml=FakeNvml({"driver_version": "", "devices": []})
    )
    assert jet.source == "jetson-ina3221"
    jet.close()
    rapl = open_energy_meter("cpu", paths=tree("x86-rapl"))
    assert rapl.source == "rapl"
    rapl.close()
    est = open_energy_meter(paths=empty_host, profile=load_catalog().get("cpu-x86"))
    assert est.estimated and est.source == "estimate:cpu-x86"
    est.start()
    assert est.stop() >= 0.0


def test_sampler_reads_nvml_and_jetson_and_exports_prometheus(tree) -> None:
    sampler = TelemetrySampler(tree("x86-rapl"), nvml=FakeNvml("a100-mig.json"))
    s = sampler.sample()
    g = s.gpus[0]
    assert g.utilization_pct is None  # MIG enabled: NVML does not report the parent's
    assert g.power_w == 398.512 and g.temperature_c == 71
    assert g.throttle_reasons == ["sw_power_cap"] and g.energy_j == 98122004.551
    assert s.temperatures_c == {"x86_pkg_temp": 52.0} and "rapl" in s.sources
    registry = CollectorRegistry()
    registry.register(TelemetryCollector(sampler))
    text = generate_latest(registry).decode()
    uuid = "GPU-7d1c0e55-2a6f-4b0e-9c3d-8e2a5f6b1c47"
    assert f'nv_gpu_power_usage{{gpu_uuid="{uuid}"}} 398.512' in text
    assert f'edgetier_gpu_throttled{{gpu_uuid="{uuid}",reason="sw_power_cap"}} 1.0' in text
    assert "edgetier_memory_total_bytes" in text
    jetson = TelemetrySampler(
        tree("jetson-nano"), nvml=FakeNvml({"driver_version": "", "devices": []})
    ).sample()
    assert (
        jetson.board_power_w == 2.43 and jetson.soc_gpu_percent == 37.2 and jetson.power_w == 2.43
    )


def test_sampler_on_a_bare_host(empty_host) -> None:
    s = TelemetrySampler(empty_host).sample()
    assert s.gpus == [] and s.power_w is None and s.memory_total_bytes

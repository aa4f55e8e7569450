"""GPU metrics exactly as Triton exposes them: names, the gpu_uuid label, types and units.

Triton (core/src/metrics.cc) registers nv_gpu_utilization (gauge, 0..1),
nv_gpu_memory_total_bytes and nv_gpu_memory_used_bytes (gauges, bytes), nv_gpu_power_usage
and nv_gpu_power_limit (gauges, watts; the limit is the configured management limit) and
nv_energy_consumption (a counter of joules since the server started), each labelled only
with gpu_uuid, and renders the counter under its own name (no ``_total``).
"""

from __future__ import annotations

import re

from fake_nvml import FakeNvml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edgetier.hardware import TelemetryCollector, TelemetrySampler
from edgetier.server._metrics import render_registry

T4_UUID = "GPU-3f9a4e2c-6b1d-8c55-0e7a-2d4f1b9c7e31"
TRITON_GPU_METRICS = {
    "nv_gpu_utilization": "gauge",
    "nv_gpu_memory_total_bytes": "gauge",
    "nv_gpu_memory_used_bytes": "gauge",
    "nv_gpu_power_usage": "gauge",
    "nv_gpu_power_limit": "gauge",
    "nv_energy_consumption": "counter",
}


def _scrape(collector: TelemetryCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return render_registry(registry).decode()


def _samples(text: str) -> dict[str, dict[str, float]]:
    """metric family -> {gpu_uuid: value}, checking each nv_* sample has only gpu_uuid."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in TRITON_GPU_METRICS:
            assert family.type == TRITON_GPU_METRICS[family.name], family.name
            for s in family.samples:
                assert set(s.labels) == {"gpu_uuid"}, (family.name, s.labels)
                found.setdefault(family.name, {})[s.labels["gpu_uuid"]] = s.value
    return found


def test_gpu_metrics_have_tritons_names_label_types_and_units(tree) -> None:
    fake = FakeNvml("t4.json")
    fake.device(0)["external_power_cap_mw"] = 65_000  # enforced below the configured 70 W
    text = _scrape(TelemetryCollector(TelemetrySampler(tree("x86-rapl"), nvml=fake)))
    got = _samples(text)
    assert set(got) == set(TRITON_GPU_METRICS)
    assert got["nv_gpu_utilization"] == {T4_UUID: 0.0}
    assert got["nv_gpu_memory_total_bytes"] == {T4_UUID: 16106127360.0}
    assert got["nv_gpu_memory_used_bytes"] == {T4_UUID: 5242880.0}
    assert got["nv_gpu_power_usage"] == {T4_UUID: 9.65}
    assert got["nv_gpu_power_limit"] == {T4_UUID: 70.0}  # the management limit, as Triton
    # the counter keeps Triton's exact name and type line
    assert "# TYPE nv_energy_consumption counter\n" in text
    assert re.search(rf'^nv_energy_consumption\{{gpu_uuid="{T4_UUID}"\}} 0\.0$', text, re.M)
    # EdgeTier's own GPU metrics use the same key
    assert f'edgetier_gpu_temperature_celsius{{gpu_uuid="{T4_UUID}"}} 33.0' in text
    assert f'edgetier_gpu_info{{gpu_uuid="{T4_UUID}",index="0",name="Tesla T4"}} 1.0' in text


def test_energy_is_a_counter_since_the_server_started(tree) -> None:
    fake = FakeNvml("t4.json")
    collector = TelemetryCollector(TelemetrySampler(tree("x86-rapl"), nvml=fake))
    energy = fake.device(0)

    def joules() -> float:
        return _samples(_scrape(collector))["nv_energy_consumption"][T4_UUID]

    assert joules() == 0.0  # not the 1.52 MJ NVML counted since the driver loaded
    energy["total_energy_mj"] += 2500
    assert joules() == 2.5
    energy["total_energy_mj"] = 1000  # the driver reloaded: NVML's counter restarts
    assert joules() == 2.5  # a counter never goes down
    energy["total_energy_mj"] += 500
    assert joules() == 3.0


def test_metrics_a_device_does_not_measure_are_absent_not_zero(tree) -> None:
    mig = _samples(_scrape(TelemetryCollector(TelemetrySampler(nvml=FakeNvml("a100-mig.json")))))
    assert "nv_gpu_utilization" not in mig  # NotSupported on a MIG parent
    assert mig["nv_gpu_power_usage"] == {"GPU-7d1c0e55-2a6f-4b0e-9c3d-8e2a5f6b1c47": 398.512}
    jetson = _scrape(
        TelemetryCollector(
            TelemetrySampler(tree("jetson-agx-orin"), nvml=FakeNvml("jetson-orin-jp6.json"))
        )
    )
    assert _samples(jetson) == {}  # Orin on JetPack 6: NVML answers none of them
    assert 'edgetier_gpu_info{gpu_uuid="GPU-5ad1e0c7' in jetson
    assert 'edgetier_power_watts{source="jetson-ina3221"}' in jetson

"""Live telemetry: one ``TelemetrySample`` per call from NVML, Jetson sysfs, psutil, thermal
zones and RAPL, and ``TelemetryCollector``, the Prometheus view of the same sampler.

    from edgetier.hardware import TelemetrySampler
    sampler = TelemetrySampler()
    print(sampler.sample().as_dict())
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgetier.hardware._energy import _busy_fraction
from edgetier.hardware._jetson import (
    TegrastatsSample,
    parse_tegrastats,
    read_gpu_load,
    read_rails_mw,
    total_power_mw,
)
from edgetier.hardware._nvml import GpuReading, open_nvml, read_gpus
from edgetier.hardware._paths import HostPaths
from edgetier.hardware._rapl import RaplCounter, find_rapl_zones
from edgetier.hardware._zones import read_thermal_zones

__all__ = ["TelemetryCollector", "TelemetrySample", "TelemetrySampler", "sample_from_tegrastats"]


@dataclass(frozen=True)
class TelemetrySample:
    """The state of the node at ``time_s`` (Unix seconds); None where not measured."""

    time_s: float
    cpu_percent: float | None
    cpu_per_core_percent: list[float]
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    gpus: list[GpuReading] = field(default_factory=list)
    soc_gpu_percent: float | None = None
    soc_gpu_clock_mhz: float | None = None
    rails_mw: dict[str, float] = field(default_factory=dict)
    board_power_w: float | None = None
    cpu_power_w: float | None = None
    cpu_energy_j: float | None = None
    temperatures_c: dict[str, float] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def max_temperature_c(self) -> float | None:
        temps = list(self.temperatures_c.values())
        temps += [g.temperature_c for g in self.gpus if g.temperature_c is not None]
        return max(temps) if temps else None

    @property
    def power_w(self) -> float | None:
        """Best total: Jetson board input, else GPUs plus RAPL, else None."""
        if self.board_power_w is not None:
            return self.board_power_w
        parts = [g.power_w for g in self.gpus if g.power_w is not None]
        if self.cpu_power_w is not None:
            parts.append(self.cpu_power_w)
        return sum(parts) if parts else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["power_w"] = self.power_w
        data["max_temperature_c"] = self.max_temperature_c
        return data


def sample_from_tegrastats(line: str, time_s: float | None = None) -> TelemetrySample:
    """A sample built from one recorded or live tegrastats line."""
    ts: TegrastatsSample = parse_tegrastats(line)
    loads = [x for x in ts.cpu_load_pct if x is not None]
    return TelemetrySample(
        time_s=time.time() if time_s is None else time_s,
        cpu_percent=sum(loads) / len(loads) if loads else None,
        cpu_per_core_percent=loads,
        memory_used_bytes=ts.ram_used_mb * 2**20 if ts.ram_used_mb is not None else None,
        memory_total_bytes=ts.ram_total_mb * 2**20 if ts.ram_total_mb is not None else None,
        soc_gpu_percent=ts.gpu_load_pct,
        soc_gpu_clock_mhz=float(ts.gpu_freq_mhz) if ts.gpu_freq_mhz is not None else None,
        rails_mw=ts.rails_mw,
        board_power_w=ts.power_w,
        temperatures_c=ts.temperatures_c,
        sources=["tegrastats"],
    )


class TelemetrySampler:
    """Reads every source this node has; the sources are found once, at construction."""

    def __init__(
        self,
        paths: HostPaths | None = None,
        *,
        nvml: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.paths = paths or HostPaths()
        self._clock = clock
        handle = open_nvml(nvml)
        self.nvml = handle.module
        self.nvml_reason = handle.reason
        zones = find_rapl_zones(self.paths)
        self._rapl = RaplCounter(zones) if zones else None
        self._rapl_last: tuple[float, float] | None = None
        self._jetson_rails = bool(read_rails_mw(self.paths))
        self._cpu_last = psutil.cpu_times()
        self._cores_last = psutil.cpu_times(percpu=True)

    @property
    def sources(self) -> list[str]:
        found = ["psutil", "thermal_zones"]
        if self.nvml is not None:
            found.append("nvml")
        if self._jetson_rails:
            found.append("jetson-ina3221")
        if self._rapl is not None:
            found.append("rapl")
        return found

    def _cpu(self) -> tuple[float, list[float]]:
        now, cores = psutil.cpu_times(), psutil.cpu_times(percpu=True)
        total = 100.0 * _busy_fraction(self._cpu_last, now)
        per_core = [
            100.0 * _busy_fraction(a, b) for a, b in zip(self._cores_last, cores, strict=False)
        ]
        self._cpu_last, self._cores_last = now, cores
        return total, per_core

    def _rapl_power(self, now_s: float) -> tuple[float | None, float | None]:
        if self._rapl is None:
            return None, None
        joules = self._rapl.poll()
        power = None
        if self._rapl_last is not None and now_s > self._rapl_last[0]:
            power = (joules - self._rapl_last[1]) / (now_s - self._rapl_last[0])
        self._rapl_last = (now_s, joules)
        return power, joules

    def sample(self) -> TelemetrySample:
        """Read every source once. CPU and RAPL figures are averages since the last call."""
        now_s = self._clock()
        cpu_total, per_core = self._cpu()
        mem = psutil.virtual_memory()
        gpus: list[GpuReading] = []
        if self.nvml is not None:
            try:
                gpus = read_gpus(self.nvml)
            except Exception:
                gpus = []
        rails = read_rails_mw(self.paths) if self._jetson_rails else {}
        board_mw = total_power_mw(rails)
        soc_gpu, soc_clock = read_gpu_load(self.paths)
        cpu_power, cpu_energy = self._rapl_power(now_s)
        return TelemetrySample(
            time_s=now_s,
            cpu_percent=cpu_total,
            cpu_per_core_percent=per_core,
            memory_used_bytes=int(mem.total - mem.available),
            memory_total_bytes=int(mem.total),
            gpus=gpus,
            soc_gpu_percent=soc_gpu,
            soc_gpu_clock_mhz=soc_clock,
            rails_mw=rails,
            board_power_w=board_mw / 1000.0 if board_mw is not None else None,
            cpu_power_w=cpu_power,
            cpu_energy_j=cpu_energy,
            temperatures_c=read_thermal_zones(self.paths),
            sources=self.sources,
        )


class TelemetryCollector(Collector):
    """Prometheus collector over a ``TelemetrySampler``; register it on the metrics registry.

    ``registry.register(TelemetryCollector())`` exposes Triton's ``nv_gpu_utilization``,
    ``nv_gpu_memory_{used,total}_bytes``, ``nv_gpu_power_{usage,limit}`` and
    ``nv_energy_consumption`` (NVML), ``edgetier_gpu_temperature_celsius``,
    ``edgetier_cpu_utilization_percent``, ``edgetier_memory_*_bytes``,
    ``edgetier_temperature_celsius`` and ``edgetier_power_watts`` at each scrape.
    """

    def __init__(self, sampler: TelemetrySampler | None = None, *, node: str = "") -> None:
        self.sampler = sampler or TelemetrySampler()
        self.node = node

    def describe(self) -> Iterator[Metric]:
        return iter(())  # sources vary per node: do not pre-declare (avoids a scrape at import)

    def collect(self) -> Iterator[Metric]:
        s = self.sampler.sample()
        gpu_labels = ["gpu", "name"]

        def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        # GPU metrics carry Triton's names (nv_gpu_*), so Triton dashboards work unchanged.
        util = gauge("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0).", gpu_labels)
        mem_used = gauge("nv_gpu_memory_used_bytes", "GPU used memory, in bytes.", gpu_labels)
        mem_total = gauge("nv_gpu_memory_total_bytes", "GPU total memory, in bytes.", gpu_labels)
        power = gauge("nv_gpu_power_usage", "GPU power usage in watts.", gpu_labels)
        limit = gauge("nv_gpu_power_limit", "GPU power management limit in watts.", gpu_labels)
        temp = gauge("edgetier_gpu_temperature_celsius", "GPU core temperature.", gpu_labels)
        clock = gauge("edgetier_gpu_sm_clock_hertz", "SM clock.", gpu_labels)
        throttle = gauge(
            "edgetier_gpu_throttled",
            "1 while a clocks-event reason is active.",
            [*gpu_labels, "reason"],
        )
        energy = gauge("nv_energy_consumption", "GPU energy consumption in joules.", gpu_labels)
        for g in s.gpus:
            lab = [str(g.index), g.name]
            for fam, value in (
                (util, g.utilization_pct / 100 if g.utilization_pct is not None else None),
                (mem_used, g.memory_used_bytes),
                (mem_total, g.memory_total_bytes),
                (power, g.power_w),
                (limit, g.power_limit_w),
                (temp, g.temperature_c),
                (clock, g.sm_clock_mhz * 1e6 if g.sm_clock_mhz is not None else None),
            ):
                if value is not None:
                    fam.add_metric(lab, float(value))
            for reason in g.throttle_reasons:
                throttle.add_metric([*lab, reason], 1.0)
            if g.energy_j is not None:
                energy.add_metric(lab, g.energy_j)
        yield from (util, mem_used, mem_total, power, limit, temp, clock, throttle, energy)

        cpu = gauge("edgetier_cpu_utilization_percent", "CPU busy time since last scrape.")
        if s.cpu_percent is not None:
            cpu.add_metric([], s.cpu_percent)
        yield cpu
        used = gauge("edgetier_memory_used_bytes", "Host memory in use (total - available).")
        total = gauge("edgetier_memory_total_bytes", "Host memory size.")
        if s.memory_used_bytes is not None and s.memory_total_bytes is not None:
            used.add_metric([], float(s.memory_used_bytes))
            total.add_metric([], float(s.memory_total_bytes))
        yield from (used, total)
        zones = gauge("edgetier_temperature_celsius", "Thermal zone temperature.", ["zone"])
        for zone, value in s.temperatures_c.items():
            zones.add_metric([zone], value)
        yield zones
        watts = gauge("edgetier_power_watts", "Measured power by source.", ["source"])
        if s.board_power_w is not None:
            watts.add_metric(["jetson-ina3221"], s.board_power_w)
        if s.cpu_power_w is not None:
            watts.add_metric(["rapl"], s.cpu_power_w)
        for rail, mw in s.rails_mw.items():
            watts.add_metric([f"rail:{rail}"], mw / 1000.0)
        yield watts

"""Live telemetry: one ``TelemetrySample`` per call from NVML, Jetson sysfs, psutil, thermal
zones and RAPL, and ``TelemetryCollector``, the Prometheus view of the same sampler.

    from edgetier.hardware import TelemetrySampler
    sampler = TelemetrySampler()
    print(sampler.sample().as_dict())
"""

from __future__ import annotations

import threading
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
from edgetier.hardware._zones import governing_temperature_c, read_thermal_zones

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
        """The hottest sensor that measures (Jetson's constant PMIC die reading left out)."""
        temps = [g.temperature_c for g in self.gpus if g.temperature_c is not None]
        if (zones := governing_temperature_c(self.temperatures_c)) is not None:
            temps.append(zones)
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

    def read_gpus(self) -> list[GpuReading]:
        """One reading of every NVIDIA GPU; none where NVML is absent or fails outright."""
        if self.nvml is None:
            return []
        try:
            return read_gpus(self.nvml)
        except Exception:  # a driver gone away mid-run must not stop the other sources
            return []

    def sample(self) -> TelemetrySample:
        """Read every source once. CPU and RAPL figures are averages since the last call."""
        now_s = self._clock()
        cpu_total, per_core = self._cpu()
        mem = psutil.virtual_memory()
        gpus = self.read_gpus()
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


class _EnergyCounter:
    """Joules per GPU since the collector started, from NVML's counter since the driver
    loaded: it never decreases, and a counter that restarts (driver reload) starts a new
    baseline instead of going backwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_j: dict[str, float] = {}
        self._total_j: dict[str, float] = {}

    def update(self, uuid: str, counter_j: float) -> float:
        with self._lock:
            last = self._last_j.get(uuid, counter_j)
            self._total_j[uuid] = self._total_j.get(uuid, 0.0) + max(0.0, counter_j - last)
            self._last_j[uuid] = counter_j
            return self._total_j[uuid]


class TelemetryCollector(Collector):
    """Prometheus collector over a ``TelemetrySampler``; register it on the metrics registry.

    GPU metrics carry Triton's names, label (``gpu_uuid``), types and units, so Triton
    dashboards and alerts work unchanged: ``nv_gpu_utilization`` (0..1),
    ``nv_gpu_memory_{used,total}_bytes``, ``nv_gpu_power_usage`` and ``nv_gpu_power_limit``
    (watts; the configured management limit) are gauges, ``nv_energy_consumption`` is a
    counter of joules since this collector (the server) started. Beside them:
    ``edgetier_gpu_info{gpu_uuid,index,name}``, ``edgetier_gpu_temperature_celsius``,
    ``edgetier_gpu_sm_clock_hertz``, ``edgetier_gpu_throttled{reason}``,
    ``edgetier_cpu_utilization_percent``, ``edgetier_memory_*_bytes``,
    ``edgetier_temperature_celsius`` and ``edgetier_power_watts``. A value a device does
    not report is left out, never written as 0.
    """

    def __init__(self, sampler: TelemetrySampler | None = None, *, node: str = "") -> None:
        self.sampler = sampler or TelemetrySampler()
        self.node = node
        self._energy = _EnergyCounter()
        for g in self.sampler.read_gpus():  # the baseline: energy counts from here
            if g.energy_j is not None:
                self._energy.update(_gpu_uuid(g), g.energy_j)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # sources vary per node: do not pre-declare (avoids a scrape at import)

    def collect(self) -> Iterator[Metric]:
        s = self.sampler.sample()
        yield from self._gpu_metrics(s.gpus)

        cpu = _gauge("edgetier_cpu_utilization_percent", "CPU busy time since last scrape.")
        if s.cpu_percent is not None:
            cpu.add_metric([], s.cpu_percent)
        yield cpu
        used = _gauge("edgetier_memory_used_bytes", "Host memory in use (total - available).")
        total = _gauge("edgetier_memory_total_bytes", "Host memory size.")
        if s.memory_used_bytes is not None and s.memory_total_bytes is not None:
            used.add_metric([], float(s.memory_used_bytes))
            total.add_metric([], float(s.memory_total_bytes))
        yield from (used, total)
        zones = _gauge("edgetier_temperature_celsius", "Thermal zone temperature.", ["zone"])
        for zone, value in s.temperatures_c.items():
            zones.add_metric([zone], value)
        yield zones
        watts = _gauge("edgetier_power_watts", "Measured power by source.", ["source"])
        if s.board_power_w is not None:
            watts.add_metric(["jetson-ina3221"], s.board_power_w)
        if s.cpu_power_w is not None:
            watts.add_metric(["rapl"], s.cpu_power_w)
        for rail, mw in s.rails_mw.items():
            watts.add_metric([f"rail:{rail}"], mw / 1000.0)
        yield watts

    def _gpu_metrics(self, gpus: list[GpuReading]) -> Iterator[Metric]:
        key = ["gpu_uuid"]
        util = _gauge("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", key)
        mem_total = _gauge("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", key)
        mem_used = _gauge("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", key)
        power = _gauge("nv_gpu_power_usage", "GPU power usage in watts", key)
        limit = _gauge("nv_gpu_power_limit", "GPU power management limit in watts", key)
        # a counter under its own name, as Triton writes it (the server renders it so)
        energy = Metric(
            "nv_energy_consumption",
            "GPU energy consumption in joules since the server started",
            "counter",
        )
        info = _gauge(
            "edgetier_gpu_info", "NVML index and name of each GPU.", [*key, "index", "name"]
        )
        temp = _gauge("edgetier_gpu_temperature_celsius", "GPU core temperature.", key)
        clock = _gauge("edgetier_gpu_sm_clock_hertz", "SM clock.", key)
        throttle = _gauge(
            "edgetier_gpu_throttled", "1 while a clocks-event reason is active.", [*key, "reason"]
        )
        for g in gpus:
            uuid = _gpu_uuid(g)
            info.add_metric([uuid, str(g.index), g.name], 1.0)
            for fam, value in (
                (util, g.utilization_pct / 100 if g.utilization_pct is not None else None),
                (mem_total, g.memory_total_bytes),
                (mem_used, g.memory_used_bytes),
                (power, g.power_w),
                (limit, g.power_management_limit_w),
                (temp, g.temperature_c),
                (clock, g.sm_clock_mhz * 1e6 if g.sm_clock_mhz is not None else None),
            ):
                if value is not None:
                    fam.add_metric([uuid], float(value))
            for reason in g.throttle_reasons or []:
                throttle.add_metric([uuid, reason], 1.0)
            if g.energy_j is not None:
                energy.add_sample(
                    "nv_energy_consumption",
                    {"gpu_uuid": uuid},
                    self._energy.update(uuid, g.energy_j),
                )
        yield from (util, mem_total, mem_used, power, limit, energy, info, temp, clock, throttle)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _gpu_uuid(g: GpuReading) -> str:
    """Triton's key for a GPU; the NVML index where the driver gives no UUID."""
    return g.uuid or f"index-{g.index}"

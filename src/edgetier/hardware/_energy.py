"""Energy meters: joules consumed between ``start()`` and ``stop()``, from the best source.

from edgetier.hardware import open_energy_meter
meter = open_energy_meter()          # Jetson INA3221, NVML, RAPL, else an estimate
meter.start(); run(); joules = meter.stop(); meter.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import psutil

from edgetier.errors import ConfigError, UnsupportedError
from edgetier.hardware._catalog import DeviceProfile, load_catalog
from edgetier.hardware._jetson import read_rails_mw, total_power_mw
from edgetier.hardware._nvml import open_nvml, try_nvml
from edgetier.hardware._paths import HostPaths
from edgetier.hardware._rapl import RaplCounter, find_rapl_zones

__all__ = [
    "CounterEnergyMeter",
    "EnergyMeter",
    "EnergyUnavailableError",
    "EstimatedEnergyMeter",
    "PowerIntegrator",
    "SampledPowerMeter",
    "integrate_power",
    "open_energy_meter",
]

DEFAULT_INTERVAL_S = 0.05


@runtime_checkable
class EnergyMeter(Protocol):
    """What the bench package and the telemetry sampler need from an energy source."""

    source: str
    estimated: bool

    def start(self) -> None: ...

    def stop(self) -> float: ...

    def close(self) -> None: ...


def integrate_power(times_s: Sequence[float], power_w: Sequence[float]) -> float:
    """Joules under a power curve sampled at ``times_s`` (trapezoidal rule)."""
    if len(times_s) != len(power_w):
        raise ValueError(f"times_s has {len(times_s)} samples, power_w has {len(power_w)}")
    integ = PowerIntegrator()
    for t, p in zip(times_s, power_w, strict=True):
        integ.add(t, p)
    return integ.joules


class EnergyUnavailableError(UnsupportedError):
    """Raised by ``stop()`` when the meter got no reading to measure the window with."""


class PowerIntegrator:
    """Running trapezoidal integral of power samples; times must not go backwards."""

    def __init__(self) -> None:
        self.joules = 0.0
        self._last: tuple[float, float] | None = None

    def add(self, time_s: float, power_w: float) -> float:
        if self._last is not None:
            t0, p0 = self._last
            if time_s < t0:
                raise ValueError(f"time_s must not decrease: {time_s} after {t0}")
            self.joules += (time_s - t0) * (p0 + power_w) / 2.0
        self._last = (time_s, power_w)
        return self.joules


class _Poller:
    """A daemon thread calling ``tick`` every ``interval_s`` between start and stop."""

    def __init__(self, tick: Callable[[], None], interval_s: float) -> None:
        self._tick = tick
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edgetier-energy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class SampledPowerMeter:
    """Integrates a power reading (watts) sampled every ``interval_s`` on a thread.

    A reading that fails (None or an exception) is skipped and counted in ``failed_reads``;
    a window with fewer than two readings raises ``EnergyUnavailableError`` at ``stop()``:
    a sensor that answered nothing has measured nothing, not zero joules.
    """

    estimated = False

    def __init__(
        self,
        source: str,
        read_power_w: Callable[[], float | None],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._read = read_power_w
        self._clock = clock
        self._lock = threading.Lock()
        self._integ = PowerIntegrator()
        self._poller = _Poller(self._sample, interval_s)
        self.readings = 0
        self.failed_reads = 0

    def _sample(self) -> None:
        try:
            power = self._read()
        except Exception:  # a sensor file that vanished, a driver error: counted, not fatal
            power = None
        with self._lock:
            if power is None:
                self.failed_reads += 1
            else:
                self._integ.add(self._clock(), power)
                self.readings += 1

    def start(self) -> None:
        self._integ = PowerIntegrator()
        self.readings = self.failed_reads = 0
        self._sample()
        self._poller.start()

    def stop(self) -> float:
        self._poller.stop()
        self._sample()
        if self.readings < 2:
            raise EnergyUnavailableError(
                f"{self.source}: no power reading to integrate between start and stop "
                f"({self.readings} of {self.readings + self.failed_reads} reads answered, "
                "2 needed); the energy is unknown"
            )
        return self._integ.joules

    def close(self) -> None:
        self._poller.stop()


class CounterEnergyMeter:
    """Differences a cumulative energy counter (joules); polls it so wraps are not missed."""

    estimated = False

    def __init__(
        self,
        source: str,
        read_joules: Callable[[], float],
        *,
        poll_interval_s: float | None = None,
    ) -> None:
        self.source = source
        self._read = read_joules
        self._start = 0.0
        self._poller = _Poller(self._poll, poll_interval_s) if poll_interval_s else None

    def _poll(self) -> None:
        self._read()

    def start(self) -> None:
        self._start = self._read()
        if self._poller:
            self._poller.start()

    def stop(self) -> float:
        if self._poller:
            self._poller.stop()
        return self._read() - self._start

    def close(self) -> None:
        if self._poller:
            self._poller.stop()


def _busy_fraction(before: Any, after: Any) -> float:
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (
        before.idle + getattr(before, "iowait", 0.0)
    )
    total = sum(after) - sum(before)
    return 0.0 if total <= 0 else min(1.0, max(0.0, 1.0 - idle / total))


class EstimatedEnergyMeter:
    """No power sensor: ``max_power_w x CPU busy fraction x seconds``, labelled estimated.

    For a CPU profile ``max_power_w`` is the local core count times the profile's per-core
    share of its reference part's TDP; otherwise the profile's TDP. It estimates the energy
    the work adds at full load, not the idle floor of the machine.
    """

    estimated = True

    def __init__(self, profile: DeviceProfile, *, physical_cores: int | None = None) -> None:
        self.source = f"estimate:{profile.id}"
        if profile.cpu is not None and profile.cpu.power_per_core_w is not None:
            self.max_power_w = (physical_cores or psutil.cpu_count(logical=False) or 1) * (
                profile.cpu.power_per_core_w
            )
        elif profile.tdp_w is not None:
            self.max_power_w = profile.tdp_w
        else:
            raise ConfigError(f"profile {profile.id!r} has no tdp_w to estimate power from")
        self._t0 = 0.0
        self._cpu0: Any = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = psutil.cpu_times()

    def stop(self) -> float:
        elapsed_s = time.monotonic() - self._t0
        busy = _busy_fraction(self._cpu0, psutil.cpu_times())
        return self.max_power_w * busy * elapsed_s

    def close(self) -> None:
        return None


def open_energy_meter(
    device: str | None = None,
    *,
    paths: HostPaths | None = None,
    nvml: Any | None = None,
    profile: DeviceProfile | None = None,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> EnergyMeter:
    """The best energy source for ``device``: ``"jetson"`` (INA3221 rails), ``"gpu:N"``
    (NVML), ``"cpu"`` (RAPL), or None for the first that measures, in that order; else an
    estimate from the profile (``estimated`` True).
    """
    paths = paths or HostPaths()
    kind, _, index_text = (device or "auto").partition(":")
    if kind not in ("auto", "gpu", "cuda", "nvml", "jetson", "cpu") or not (
        index_text.isdigit() or not index_text
    ):
        raise ConfigError(f"device must be one of gpu:N, jetson, cpu or None, got {device!r}")
    # Jetson first: on Orin with JetPack 6 NVML counts the integrated GPU but answers
    # NotSupported for its power and energy, while the INA3221 rails measure the module.
    if kind in ("auto", "jetson") and total_power_mw(read_rails_mw(paths)) is not None:

        def jetson_power_w() -> float | None:
            mw = total_power_mw(read_rails_mw(paths))
            return mw / 1000.0 if mw is not None else None

        return SampledPowerMeter("jetson-ina3221", jetson_power_w, interval_s=interval_s)
    if kind in ("auto", "gpu", "cuda", "nvml"):
        handle = open_nvml(nvml)
        count = (try_nvml(handle.module.nvmlDeviceGetCount) or 0) if handle.module else 0
        index = int(index_text or 0)
        if kind != "auto" and handle.module is not None and index >= count:
            raise ConfigError(f"device {device!r}: NVML sees {count} GPU(s), indices from 0")
        if count > index and (meter := _nvml_meter(handle.module, index, interval_s)):
            return meter
    if kind in ("auto", "cpu") and (zones := find_rapl_zones(paths)):
        counter = RaplCounter(zones)
        # a package counter wraps after max_energy_range_uj (~262 kJ): polling every second
        # catches every wrap below 262 kW
        return CounterEnergyMeter("rapl", counter.poll, poll_interval_s=1.0)
    if profile is None:
        from edgetier.hardware._probe import probe

        machine = probe(paths, nvml=nvml)
        profile = machine.profile or load_catalog().get("cpu-x86")
        return EstimatedEnergyMeter(profile, physical_cores=machine.cpu.physical_cores)
    return EstimatedEnergyMeter(profile)


def _nvml_meter(nvml: Any, index: int, interval_s: float) -> EnergyMeter | None:
    """NVML's energy counter (Volta and newer), else its power reading integrated; None
    where the GPU answers neither (a Jetson's integrated GPU, some vGPU profiles)."""
    handle = try_nvml(nvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return None
    if try_nvml(nvml.nvmlDeviceGetTotalEnergyConsumption, handle) is not None:  # in mJ
        return CounterEnergyMeter(
            "nvml", lambda: float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) / 1000.0
        )

    def power_w() -> float | None:
        milliwatts = try_nvml(nvml.nvmlDeviceGetPowerUsage, handle)
        return float(milliwatts) / 1000.0 if milliwatts is not None else None

    if power_w() is None:
        return None
    return SampledPowerMeter("nvml", power_w, interval_s=interval_s)

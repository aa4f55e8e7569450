"""NVIDIA GPUs through NVML (the ``pynvml`` module of nvidia-ml-py).

Every function takes the NVML module as an argument, so tests pass a recorded fake with the
same function names; ``open_nvml()`` returns the real one, initialised, or says why not.

Each query stands alone: a device answers ``NVMLError_NotSupported`` for what it does not
measure (power and memory on a Jetson's integrated GPU, utilisation on a MIG parent) and an
old driver ``NVMLError_FunctionNotFound`` for a symbol it lacks; such a field reads None and
the rest of the device, and every other device, is still reported.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

from pynvml import NVMLError, NVMLError_FunctionNotFound

__all__ = [
    "GpuInfo",
    "GpuReading",
    "MigInstance",
    "NvmlHandle",
    "gpu_infos",
    "open_nvml",
    "read_gpus",
    "throttle_reason_names",
    "try_nvml",
]

# Bits of nvmlDeviceGetCurrentClocksEventReasons (nvml.h, nvmlClocksEventReason*).
_THROTTLE_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


@dataclass(frozen=True)
class NvmlHandle:
    """An initialised NVML module, or None and the reason it is unavailable."""

    module: Any | None
    reason: str

    @property
    def available(self) -> bool:
        return self.module is not None


def open_nvml(nvml: Any | None = None) -> NvmlHandle:
    """Initialise NVML (the given module, else ``pynvml``); never raises."""
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return NvmlHandle(None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return NvmlHandle(None, f"NVML unavailable: {exc} (no NVIDIA driver on this machine?)")
    return NvmlHandle(nvml, "ok")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def try_nvml(call: Any, *args: Any) -> Any:
    """Call an NVML function; None where the device or driver does not answer it."""
    try:
        return call(*args)
    except NVMLError:
        return None


def _clocks_event_mask(nvml: Any, handle: Any) -> int | None:
    """The clocks-event (throttle) reason mask, or None where unknown.

    ``nvmlDeviceGetCurrentClocksEventReasons`` arrived with driver 535; older drivers only
    export ``nvmlDeviceGetCurrentClocksThrottleReasons`` (same bits), and nvidia-ml-py raises
    FunctionNotFound for the newer name there although its Python function exists.
    """
    for name in (
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
    ):
        call = getattr(nvml, name, None)
        if call is None:  # an nvidia-ml-py older than the symbol
            continue
        try:
            return int(call(handle))
        except NVMLError_FunctionNotFound:
            continue
        except NVMLError:
            return None
    return None


def throttle_reason_names(mask: int) -> list[str]:
    """Names of the set bits of an NVML clocks-event (throttle) reason mask."""
    return [name for bit, name in _THROTTLE_BITS.items() if mask & bit]


@dataclass(frozen=True)
class MigInstance:
    """One MIG GPU instance (a slice of a GPU that looks like a GPU to CUDA)."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int | None


@dataclass(frozen=True)
class GpuInfo:
    """Static facts about one GPU."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int | None
    compute_capability: str | None
    driver_version: str | None
    power_limit_w: float | None
    power_limit_min_w: float | None
    power_limit_max_w: float | None
    pcie_gen_max: int | None
    mig_enabled: bool
    mig_instances: list[MigInstance] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mig(nvml: Any, handle: Any) -> tuple[bool, list[MigInstance]]:
    mode = try_nvml(nvml.nvmlDeviceGetMigMode, handle)
    if not mode or not mode[0]:
        return False, []
    count = try_nvml(nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
    instances: list[MigInstance] = []
    for i in range(count):
        mig = try_nvml(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, i)
        if mig is None:
            continue  # slot not populated
        mem = try_nvml(nvml.nvmlDeviceGetMemoryInfo, mig)
        instances.append(
            MigInstance(
                index=i,
                uuid=_text(try_nvml(nvml.nvmlDeviceGetUUID, mig) or ""),
                name=_text(try_nvml(nvml.nvmlDeviceGetName, mig) or ""),
                memory_total_bytes=int(mem.total) if mem is not None else None,
            )
        )
    return True, instances


def _handles(nvml: Any, notes: list[str] | None) -> list[tuple[int, Any]]:
    """(index, handle) of every GPU NVML can open; a GPU it cannot is noted and left out."""
    handles: list[tuple[int, Any]] = []
    for index in range(nvml.nvmlDeviceGetCount()):
        try:
            handles.append((index, nvml.nvmlDeviceGetHandleByIndex(index)))
        except NVMLError as exc:  # GpuIsLost, NoPermission (not in this cgroup), ...
            if notes is not None:
                notes.append(f"GPU {index}: NVML cannot open it ({exc}); left out")
    return handles


def _name(nvml: Any, index: int, handle: Any) -> str:
    name = try_nvml(nvml.nvmlDeviceGetName, handle)
    return _text(name) if name is not None else f"GPU {index}"


def gpu_infos(nvml: Any, notes: list[str] | None = None) -> list[GpuInfo]:
    """Static facts about every GPU NVML sees (MIG instances included); GPUs NVML cannot
    open are left out with a line in ``notes``."""
    driver = try_nvml(nvml.nvmlSystemGetDriverVersion)
    infos: list[GpuInfo] = []
    for index, h in _handles(nvml, notes):
        cc = try_nvml(nvml.nvmlDeviceGetCudaComputeCapability, h)
        limits = try_nvml(nvml.nvmlDeviceGetPowerManagementLimitConstraints, h)
        limit = try_nvml(nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        mem = try_nvml(nvml.nvmlDeviceGetMemoryInfo, h)
        mig_enabled, instances = _mig(nvml, h)
        infos.append(
            GpuInfo(
                index=index,
                name=_name(nvml, index, h),
                uuid=_text(try_nvml(nvml.nvmlDeviceGetUUID, h) or ""),
                memory_total_bytes=int(mem.total) if mem is not None else None,
                compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
                driver_version=_text(driver) if driver is not None else None,
                power_limit_w=limit / 1000.0 if limit is not None else None,
                power_limit_min_w=limits[0] / 1000.0 if limits else None,
                power_limit_max_w=limits[1] / 1000.0 if limits else None,
                pcie_gen_max=try_nvml(nvml.nvmlDeviceGetMaxPcieLinkGeneration, h),
                mig_enabled=mig_enabled,
                mig_instances=instances,
            )
        )
    return infos


@dataclass(frozen=True)
class GpuReading:
    """One sample of a GPU's live state; None where the device does not report it."""

    index: int
    name: str
    uuid: str
    utilization_pct: float | None
    memory_utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    power_w: float | None
    power_limit_w: float | None  # enforced: the lowest of every limit in force
    power_management_limit_w: float | None  # configured (nvidia-smi -pl), Triton's power limit
    temperature_c: float | None
    sm_clock_mhz: int | None
    memory_clock_mhz: int | None
    throttle_reasons: list[str] | None  # None: the driver does not say
    energy_j: float | None  # NVML's counter, since the driver loaded


def read_gpus(nvml: Any) -> list[GpuReading]:
    """Sample every GPU once."""
    readings: list[GpuReading] = []
    clock_sm = getattr(nvml, "NVML_CLOCK_SM", 1)
    clock_mem = getattr(nvml, "NVML_CLOCK_MEM", 2)
    temp_gpu = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
    for index, h in _handles(nvml, None):
        util = try_nvml(nvml.nvmlDeviceGetUtilizationRates, h)
        mem = try_nvml(nvml.nvmlDeviceGetMemoryInfo, h)
        power_mw = try_nvml(nvml.nvmlDeviceGetPowerUsage, h)
        limit_mw = try_nvml(nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        configured_mw = try_nvml(nvml.nvmlDeviceGetPowerManagementLimit, h)
        mask = _clocks_event_mask(nvml, h)
        energy_mj = try_nvml(nvml.nvmlDeviceGetTotalEnergyConsumption, h)
        temp = try_nvml(nvml.nvmlDeviceGetTemperature, h, temp_gpu)
        readings.append(
            GpuReading(
                index=index,
                name=_name(nvml, index, h),
                uuid=_text(try_nvml(nvml.nvmlDeviceGetUUID, h) or ""),
                utilization_pct=float(util.gpu) if util is not None else None,
                memory_utilization_pct=float(util.memory) if util is not None else None,
                memory_used_bytes=int(mem.used) if mem is not None else None,
                memory_total_bytes=int(mem.total) if mem is not None else None,
                power_w=power_mw / 1000.0 if power_mw is not None else None,
                power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
                power_management_limit_w=(
                    configured_mw / 1000.0 if configured_mw is not None else None
                ),
                temperature_c=float(temp) if temp is not None else None,
                sm_clock_mhz=try_nvml(nvml.nvmlDeviceGetClockInfo, h, clock_sm),
                memory_clock_mhz=try_nvml(nvml.nvmlDeviceGetClockInfo, h, clock_mem),
                throttle_reasons=throttle_reason_names(mask) if mask is not None else None,
                energy_j=energy_mj / 1000.0 if energy_mj is not None else None,
            )
        )
    return readings

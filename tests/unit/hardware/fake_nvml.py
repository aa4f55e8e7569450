"""A pynvml stand-in serving NVML readings recorded from real devices (fixtures/hardware/nvml).

It fails the way nvidia-ml-py does, with the real exception classes and constants:

- a query the device does not answer (the field is absent or null in the recording) raises
  ``pynvml.NVMLError_NotSupported``, as NVML does for power on a Jetson or utilisation on a
  MIG parent;
- a symbol the driver lacks (``missing_symbols`` in the recording) raises
  ``pynvml.NVMLError_FunctionNotFound``, as pynvml's ``_nvmlGetFunctionPointer`` does on an old
  driver, although the Python function exists;
- ``init_error`` makes ``nvmlInit`` raise (``DriverNotLoaded``, ``LibraryNotFound``), a device's
  ``handle_error`` makes ``nvmlDeviceGetHandleByIndex`` raise (``GpuIsLost``), and every call
  before ``nvmlInit`` raises ``Uninitialized``.

Power limits follow NVML: ``nvmlDeviceSetPowerManagementLimit`` sets the configured limit
(``power_management_limit_mw``); the enforced limit is the lower of it and any other cap on
the board (``external_power_cap_mw``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

FIXTURES = Path(__file__).parents[2] / "fixtures" / "hardware"


def _error(name: str) -> pynvml.NVMLError:
    """The real pynvml exception for ``NVML_ERROR_<NAME>`` (a NVMLError subclass instance)."""
    return pynvml.NVMLError(getattr(pynvml, f"NVML_ERROR_{name}"))


def _symbol(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Check, like pynvml, that NVML is initialised and the driver exports the function."""

    @functools.wraps(fn)
    def call(self: FakeNvml, *args: Any) -> Any:
        if fn.__name__ != "nvmlInit" and not self.initialised:
            raise _error("UNINITIALIZED")
        if fn.__name__ in self.rec.get("missing_symbols", ()):
            raise _error("FUNCTION_NOT_FOUND")
        self.calls.append((fn.__name__, args[1:] if args else ()))
        return fn(self, *args)

    return call


def _field(h: dict[str, Any], key: str) -> Any:
    value = h.get(key)
    if value is None:
        raise _error("NOT_SUPPORTED")
    return value


class FakeNvml:
    NVMLError = pynvml.NVMLError
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, recording: str | dict[str, Any], *, allow_set: bool = True) -> None:
        if isinstance(recording, str):
            recording = json.loads((FIXTURES / "nvml" / recording).read_text())
        self.rec = recording
        self.allow_set = allow_set
        self.calls: list[tuple[str, Any]] = []
        self.initialised = False

    def __getattr__(self, name: str) -> Any:
        # constants and exception classes come from the real module
        if name.startswith(("NVML_", "NVMLError", "nvmlClocks")):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def device(self, index: int) -> dict[str, Any]:
        """The recording of GPU ``index`` (tests change counters through it)."""
        return self.rec["devices"][index]  # type: ignore[no-any-return]

    @_symbol
    def nvmlInit(self) -> None:
        if self.rec.get("init_error"):
            raise _error(self.rec["init_error"])
        self.initialised = True

    @_symbol
    def nvmlShutdown(self) -> None:
        self.initialised = False

    @_symbol
    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self.rec["driver_version"])

    @_symbol
    def nvmlDeviceGetCount(self) -> int:
        return len(self.rec["devices"])

    @_symbol
    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        if i >= len(self.rec["devices"]):
            raise _error("INVALID_ARGUMENT")
        h = self.rec["devices"][i]
        if h.get("handle_error"):
            raise _error(h["handle_error"])
        return h  # type: ignore[no-any-return]

    @_symbol
    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str:
        return str(_field(h, "name"))

    @_symbol
    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return str(_field(h, "uuid"))

    @_symbol
    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> Any:
        if "memory_total" in h:  # a MIG device
            return SimpleNamespace(total=h["memory_total"], used=0, free=h["memory_total"])
        return SimpleNamespace(**_field(h, "memory"))

    @_symbol
    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> Any:
        return SimpleNamespace(**_field(h, "utilization"))

    @_symbol
    def nvmlDeviceGetPowerUsage(self, h: dict[str, Any]) -> int:
        return int(_field(h, "power_usage_mw"))

    @_symbol
    def nvmlDeviceGetPowerManagementLimit(self, h: dict[str, Any]) -> int:
        return int(_field(h, "power_management_limit_mw"))

    @_symbol
    def nvmlDeviceGetEnforcedPowerLimit(self, h: dict[str, Any]) -> int:
        configured = int(_field(h, "power_management_limit_mw"))
        return min(configured, int(h.get("external_power_cap_mw") or configured))

    @_symbol
    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: dict[str, Any]) -> list[int]:
        return list(_field(h, "power_limit_constraints_mw"))

    @_symbol
    def nvmlDeviceSetPowerManagementLimit(self, h: dict[str, Any], limit_mw: int) -> None:
        if not self.allow_set:
            raise _error("NO_PERMISSION")
        low, high = _field(h, "power_limit_constraints_mw")
        if not low <= limit_mw <= high:
            raise _error("INVALID_ARGUMENT")
        h["power_management_limit_mw"] = limit_mw

    @_symbol
    def nvmlDeviceGetTemperature(self, h: dict[str, Any], sensor: int) -> int:
        return int(_field(h, "temperature_c"))

    @_symbol
    def nvmlDeviceGetClockInfo(self, h: dict[str, Any], clock: int) -> int:
        clocks = _field(h, "clocks_mhz")
        return int(clocks["sm" if clock == pynvml.NVML_CLOCK_SM else "mem"])

    @_symbol
    def nvmlDeviceGetCurrentClocksEventReasons(self, h: dict[str, Any]) -> int:
        return int(_field(h, "clocks_event_reasons"))

    @_symbol
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: dict[str, Any]) -> int:
        return int(_field(h, "clocks_event_reasons"))

    @_symbol
    def nvmlDeviceGetTotalEnergyConsumption(self, h: dict[str, Any]) -> int:
        return int(_field(h, "total_energy_mj"))

    @_symbol
    def nvmlDeviceGetCudaComputeCapability(self, h: dict[str, Any]) -> tuple[int, int]:
        major, minor = _field(h, "cuda_compute_capability")
        return int(major), int(minor)

    @_symbol
    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: dict[str, Any]) -> int:
        return int(_field(h, "max_pcie_link_generation"))

    @_symbol
    def nvmlDeviceGetMigMode(self, h: dict[str, Any]) -> list[int]:
        return list(_field(h, "mig_mode"))

    @_symbol
    def nvmlDeviceGetMaxMigDeviceCount(self, h: dict[str, Any]) -> int:
        return int(_field(h, "max_mig_device_count"))

    @_symbol
    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: dict[str, Any], i: int) -> dict[str, Any]:
        devices = h.get("mig_devices", {})
        if str(i) not in devices:
            raise _error("NOT_FOUND")
        return dict(devices[str(i)])

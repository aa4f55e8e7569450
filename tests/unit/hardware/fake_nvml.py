"""A pynvml-like module serving NVML readings recorded from real GPUs (fixtures/hardware/nvml)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

FIXTURES = Path(__file__).parents[2] / "fixtures" / "hardware"


class NVMLError(Exception):
    """Stands for pynvml.NVMLError (NotSupported, NoPermission, ...)."""


class FakeNvml:
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, recording: str | dict[str, Any], *, allow_set: bool = True) -> None:
        if isinstance(recording, str):
            recording = json.loads((FIXTURES / "nvml" / recording).read_text())
        self.rec = recording
        self.allow_set = allow_set
        self.calls: list[tuple[str, Any]] = []
        self.initialised = False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self.rec["driver_version"])

    def nvmlDeviceGetCount(self) -> int:
        return len(self.rec["devices"])

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.rec["devices"][i]  # type: ignore[no-any-return]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str:
        return str(h["name"])

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return str(h["uuid"])

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> Any:
        if "memory_total" in h:  # a MIG device
            return SimpleNamespace(total=h["memory_total"], used=0, free=h["memory_total"])
        return SimpleNamespace(**h["memory"])

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> Any:
        return SimpleNamespace(**h["utilization"])

    def nvmlDeviceGetPowerUsage(self, h: dict[str, Any]) -> int:
        return int(h["power_usage_mw"])

    def nvmlDeviceGetEnforcedPowerLimit(self, h: dict[str, Any]) -> int:
        return int(h["enforced_power_limit_mw"])

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: dict[str, Any]) -> list[int]:
        return list(h["power_limit_constraints_mw"])

    def nvmlDeviceSetPowerManagementLimit(self, h: dict[str, Any], limit_mw: int) -> None:
        if not self.allow_set:
            raise NVMLError("Insufficient Permissions")
        self.calls.append(("set_power_limit", limit_mw))
        for d in self.rec["devices"]:
            if d["uuid"] == h["uuid"]:
                d["enforced_power_limit_mw"] = limit_mw

    def nvmlDeviceGetTemperature(self, h: dict[str, Any], sensor: int) -> int:
        return int(h["temperature_c"])

    def nvmlDeviceGetClockInfo(self, h: dict[str, Any], clock: int) -> int:
        return int(h["clocks_mhz"]["sm" if clock == self.NVML_CLOCK_SM else "mem"])

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: dict[str, Any]) -> int:
        return int(h["clocks_event_reasons"])

    def nvmlDeviceGetTotalEnergyConsumption(self, h: dict[str, Any]) -> int:
        return int(h["total_energy_mj"])

    def nvmlDeviceGetCudaComputeCapability(self, h: dict[str, Any]) -> tuple[int, int]:
        major, minor = h["cuda_compute_capability"]
        return int(major), int(minor)

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: dict[str, Any]) -> int:
        return int(h["max_pcie_link_generation"])

    def nvmlDeviceGetMigMode(self, h: dict[str, Any]) -> list[int]:
        if h.get("mig_mode") is None:
            raise NVMLError("Not Supported")
        return list(h["mig_mode"])

    def nvmlDeviceGetMaxMigDeviceCount(self, h: dict[str, Any]) -> int:
        return int(h.get("max_mig_device_count", 0))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: dict[str, Any], i: int) -> dict[str, Any]:
        devices = h.get("mig_devices", {})
        if str(i) not in devices:
            raise NVMLError("Not Found")
        return dict(devices[str(i)])

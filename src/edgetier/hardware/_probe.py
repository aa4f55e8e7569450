"""Probe the local machine: CPU, memory, NVIDIA GPUs (NVML, MIG), Jetson board, RAPL.

from edgetier.hardware import probe
machine = probe()
print(machine.profile_id, machine.as_dict()["cpu"]["simd"])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import psutil

from edgetier.hardware._catalog import Catalog, DeviceProfile, load_catalog
from edgetier.hardware._cpu import CpuInfo, read_cpu_info
from edgetier.hardware._jetson import JetsonInfo, detect_jetson
from edgetier.hardware._nvml import GpuInfo, gpu_infos, open_nvml
from edgetier.hardware._paths import HostPaths, read_text
from edgetier.hardware._rapl import find_rapl_zones

__all__ = ["Machine", "fingerprint", "match_profile", "probe"]


@dataclass(frozen=True)
class Machine:
    """Everything the probe found, with the catalog profile it matched."""

    cpu: CpuInfo
    memory_bytes: int
    gpus: list[GpuInfo]
    jetson: JetsonInfo | None
    rapl_zones: list[str]
    profile: DeviceProfile | None
    notes: list[str] = field(default_factory=list)

    @property
    def profile_id(self) -> str | None:
        return self.profile.id if self.profile else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready report (``edgetier hw probe --json``)."""
        return {
            "profile": self.profile_id,
            "profile_name": self.profile.name if self.profile else None,
            "tier": self.profile.tier if self.profile else None,
            "cpu": self.cpu.as_dict(),
            "memory_bytes": self.memory_bytes,
            "gpus": [g.as_dict() for g in self.gpus],
            "jetson": None
            if self.jetson is None
            else {
                "model": self.jetson.model,
                "l4t_release": self.jetson.l4t_release,
                "power_modes": [{"id": m.id, "name": m.name} for m in self.jetson.modes],
            },
            "rapl_zones": self.rapl_zones,
            "notes": self.notes,
        }


def _memory_bytes(paths: HostPaths) -> int:
    text = read_text(paths.proc_root / "meminfo")
    if text:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return int(psutil.virtual_memory().total)


def match_profile(
    catalog: Catalog, cpu: CpuInfo, gpus: list[GpuInfo], jetson: JetsonInfo | None
) -> DeviceProfile | None:
    """The catalog profile for this machine: its first GPU, else its Jetson board, else its CPU."""
    for gpu in gpus:
        if found := catalog.match(gpu.name, kind="gpu"):
            return found
    if jetson is not None and (found := catalog.match(jetson.model, kind="jetson")):
        return found
    return catalog.match(f"{cpu.arch} {cpu.simd}", kind="cpu")


def probe(
    paths: HostPaths | None = None,
    *,
    nvml: Any | None = None,
    catalog: Catalog | None = None,
) -> Machine:
    """Probe the host (or recorded ``paths`` and a fake ``nvml`` module, in tests)."""
    paths = paths or HostPaths()
    catalog = catalog or load_catalog()
    notes: list[str] = []
    cpu = read_cpu_info(paths)
    handle = open_nvml(nvml)
    gpus: list[GpuInfo] = []
    if handle.module is not None:
        try:
            gpus = gpu_infos(handle.module, notes)
        except Exception as exc:  # a driver error must not break the probe
            notes.append(f"NVML error while listing GPUs: {exc}")
    else:
        notes.append(handle.reason)
    jetson = detect_jetson(paths)
    if jetson is None:
        notes.append("not a Jetson (no /etc/nv_tegra_release, device-tree model not Jetson)")
    rapl = [z.name for z in find_rapl_zones(paths)]
    if not rapl:
        notes.append(
            "RAPL energy counters not readable (no /sys/class/powercap/intel-rapl:*/energy_uj"
            " or not permitted); CPU energy will be estimated"
        )
    profile = match_profile(catalog, cpu, gpus, jetson)
    return Machine(cpu, _memory_bytes(paths), gpus, jetson, rapl, profile, notes)


def fingerprint(machine: Machine | None = None) -> dict[str, Any]:
    """The hardware identity written into benchmark JSON: same id means same hardware."""
    machine = machine or probe()
    body = {
        "cpu": machine.cpu.model,
        "cores": machine.cpu.logical_cores,
        "memory_bytes": machine.memory_bytes,
        "gpus": [g.name for g in machine.gpus],
        "profile": machine.profile_id,
    }
    # memory is rounded to GiB in the hash so that a kernel reserving a little more or less
    # memory after an update does not change the identity of the machine
    key = dict(body, memory_bytes=round(machine.memory_bytes / 2**30))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return {"id": digest, **body}

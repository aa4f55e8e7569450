"""NVIDIA Jetson: detection, nvpmodel modes, INA3221 power rails, GPU load and tegrastats.

The release file (/etc/nv_tegra_release) and the device-tree model name identify the board;
rails come from the ina3221x IIO driver (L4T 32: Nano, TX2, Xavier) or the ina3221 hwmon
driver (L4T 34+: Orin). ``parse_tegrastats`` reads one line of ``tegrastats`` output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edgetier.hardware._paths import HostPaths, read_int, read_text

__all__ = [
    "JetsonInfo",
    "NvpModel",
    "TegrastatsSample",
    "detect_jetson",
    "parse_nvpmodel_conf",
    "parse_tegrastats",
    "read_gpu_load",
    "read_rails_mw",
    "total_power_mw",
]


@dataclass(frozen=True)
class NvpModel:
    """One power mode of /etc/nvpmodel.conf."""

    id: int
    name: str


@dataclass(frozen=True)
class JetsonInfo:
    """The board as L4T describes it."""

    model: str
    l4t_release: str | None
    modes: list[NvpModel] = field(default_factory=list)


_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")
_POWER_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([\w.-]+)\s*>")


def parse_nvpmodel_conf(text: str) -> list[NvpModel]:
    """The ``< POWER_MODEL ID=n NAME=... >`` entries of an nvpmodel.conf."""
    return [NvpModel(int(m[1]), m[2]) for m in _POWER_MODEL.finditer(text)]


def detect_jetson(paths: HostPaths | None = None) -> JetsonInfo | None:
    """The Jetson board under ``paths``, or None where this is not a Jetson."""
    paths = paths or HostPaths()
    release_text = read_text(paths.etc_root / "nv_tegra_release")
    model = read_text(paths.proc_root / "device-tree/model")
    if release_text is None and (model is None or "jetson" not in model.lower()):
        return None
    release = None
    if release_text is not None and (m := _RELEASE.search(release_text)):
        release = f"{m[1]}.{m[2]}"
    conf = read_text(paths.etc_root / "nvpmodel.conf") or ""
    return JetsonInfo(model or "NVIDIA Jetson (unknown model)", release, parse_nvpmodel_conf(conf))


def _iio_rails(base: Path) -> dict[str, float]:
    rails: dict[str, float] = {}
    for dev in sorted(base.glob("bus/i2c/drivers/ina3221x/*/iio:device*")):
        for name_file in sorted(dev.glob("rail_name_*")):
            channel = name_file.name.rsplit("_", 1)[1]
            power = read_int(dev / f"in_power{channel}_input")
            name = read_text(name_file)
            if name and power is not None:
                rails[name] = float(power)
    return rails


def _hwmon_rails(base: Path) -> dict[str, float]:
    rails: dict[str, float] = {}
    for mon in sorted(base.glob("bus/i2c/drivers/ina3221/*/hwmon/hwmon*")):
        for label_file in sorted(mon.glob("in*_label")):
            channel = label_file.name[2:].split("_")[0]
            name = read_text(label_file)
            volt_mv = read_int(mon / f"in{channel}_input")
            curr_ma = read_int(mon / f"curr{channel}_input")
            if not name or name == "NC" or name.startswith("sum of") or None in (volt_mv, curr_ma):
                continue
            rails[name] = volt_mv * curr_ma / 1000.0  # type: ignore[operator]
    return rails


def read_rails_mw(paths: HostPaths | None = None) -> dict[str, float]:
    """Rail name -> instantaneous power in mW from the on-module INA3221 monitors."""
    paths = paths or HostPaths()
    return _iio_rails(paths.sys_root) or _hwmon_rails(paths.sys_root)


# Rails that carry the whole module's input: Nano (POM_5V_IN), TX1/TX2, Xavier NX, Orin NX and
# Orin Nano (VDD_IN).
_INPUT_RAILS = ("POM_5V_IN", "VDD_IN", "VDD_SYS_5V0_IN")
# Modules without an input rail, whose power is the sum of parallel rails, each fed from the
# module input: AGX Xavier (INA3221 at 1-0040: GPU, CPU, SOC; at 1-0041: CV, VDDRQ, SYS5V) and
# AGX Orin (1-0040: VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0; 1-0041 also reads VDDQ_VDD2_1V8AO,
# which sits at about 5 V behind VIN_SYS_5V0 and is not added again).
_MODULE_RAIL_SETS = (
    ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"),
    ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),
)


def total_power_mw(rails: dict[str, float]) -> float | None:
    """Module power: the input rail where the board has one, else the sum of the board's
    rail set. None where neither is complete: a rail that cannot be read makes the total
    unknown, not silently smaller."""
    for name in _INPUT_RAILS:
        if name in rails:
            return rails[name]
    for names in _MODULE_RAIL_SETS:
        if all(n in rails for n in names):
            return sum(rails[n] for n in names)
    return None


def read_gpu_load(paths: HostPaths | None = None) -> tuple[float | None, float | None]:
    """(GPU load in %, GPU clock in MHz) from the devfreq node of the integrated GPU."""
    paths = paths or HostPaths()
    for node in sorted((paths.sys_root / "class/devfreq").glob("*")):
        if not re.search(r"gpu|gv11b|ga10b|gp10b", node.name):
            continue
        load = read_int(node / "device/load")  # per mille
        freq = read_int(node / "cur_freq")  # Hz
        return (
            load / 10.0 if load is not None else None,
            freq / 1e6 if freq is not None else None,
        )
    return None, None


@dataclass(frozen=True)
class TegrastatsSample:
    """One line of tegrastats output."""

    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_load_pct: list[float | None] = field(default_factory=list)
    cpu_freq_mhz: list[int | None] = field(default_factory=list)
    emc_load_pct: float | None = None
    gpu_load_pct: float | None = None
    gpu_freq_mhz: int | None = None
    temperatures_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, float] = field(default_factory=dict)
    rails_avg_mw: dict[str, float] = field(default_factory=dict)

    @property
    def power_w(self) -> float | None:
        total = total_power_mw(self.rails_mw)
        return total / 1000.0 if total is not None else None


_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?\b")


def parse_tegrastats(line: str) -> TegrastatsSample:
    """Parse one tegrastats line (L4T 32 ``POM_5V_IN 2430/2430`` and L4T 35 ``mW`` styles)."""
    cpu_load: list[float | None] = []
    cpu_freq: list[int | None] = []
    if m := _CPU.search(line):
        for core in m[1].split(","):
            load, _, freq = core.strip().partition("%@")
            if load == "off" or not freq:
                cpu_load.append(None)
                cpu_freq.append(None)
            else:
                cpu_load.append(float(load))
                cpu_freq.append(int(freq))
    ram, swap, emc, gr3d = _RAM.search(line), _SWAP.search(line), _EMC.search(line), None
    gr3d = _GR3D.search(line)
    temps = {k: float(v) for k, v in _TEMP.findall(line) if float(v) > -40.0}
    rails: dict[str, float] = {}
    rails_avg: dict[str, float] = {}
    for name, now, avg in _RAIL.findall(line):
        if name in ("RAM", "SWAP", "NC"):
            continue
        rails[name] = float(now)
        rails_avg[name] = float(avg)
    return TegrastatsSample(
        ram_used_mb=int(ram[1]) if ram else None,
        ram_total_mb=int(ram[2]) if ram else None,
        swap_used_mb=int(swap[1]) if swap else None,
        swap_total_mb=int(swap[2]) if swap else None,
        cpu_load_pct=cpu_load,
        cpu_freq_mhz=cpu_freq,
        emc_load_pct=float(emc[1]) if emc else None,
        gpu_load_pct=float(gr3d[1]) if gr3d else None,
        gpu_freq_mhz=int(gr3d[2]) if gr3d and gr3d[2] else None,
        temperatures_c=temps,
        rails_mw=rails,
        rails_avg_mw=rails_avg,
    )

"""The local CPU from /proc/cpuinfo and cpufreq: model, cores, SIMD width, peak FLOPS.

Peak FP32 FLOPS are derived as ``physical cores x clock x FLOPs per cycle``, where FLOPs per
cycle come from the widest SIMD the flags announce (see ``flops_per_cycle``).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Literal

from edgetier.hardware._paths import HostPaths, read_int, read_text

__all__ = ["CpuInfo", "flops_per_cycle", "read_cpu_info"]

SimdLevel = Literal["avx512", "avx2", "avx", "sse", "neon", "none"]

# FP32 FLOPs per cycle per core for the widest vector unit: lanes x 2 (fused multiply-add)
# x number of FMA pipes. Two pipes is the common case on server x86 (Skylake-SP Gold/Platinum,
# Ice Lake-SP, Zen 2/3/4 for 256-bit) and on Arm cores with two 128-bit NEON pipes
# (Cortex-A57/A72/A78AE, Carmel). AVX without FMA issues one add and one multiply per cycle.
_FLOPS_PER_CYCLE: dict[SimdLevel, int] = {
    "avx512": 16 * 2 * 2,
    "avx2": 8 * 2 * 2,
    "avx": 8 * 2,
    "sse": 4 * 2,
    "neon": 4 * 2 * 2,
    "none": 2,
}


def flops_per_cycle(simd: SimdLevel) -> int:
    """Peak FP32 FLOPs one core retires per cycle with the given SIMD level."""
    return _FLOPS_PER_CYCLE[simd]


@dataclass(frozen=True)
class CpuInfo:
    """What the probe learnt about the CPU."""

    model: str
    vendor: str
    arch: str
    logical_cores: int
    physical_cores: int
    clock_mhz: float | None
    max_clock_mhz: float | None
    flags: frozenset[str] = field(default_factory=frozenset, repr=False)

    @property
    def simd(self) -> SimdLevel:
        """The widest SIMD instruction set the CPU announces."""
        f = self.flags
        if "avx512f" in f:
            return "avx512"
        if "avx2" in f and "fma" in f:
            return "avx2"
        if "avx" in f:
            return "avx"
        if "asimd" in f or "neon" in f:
            return "neon"
        if "sse2" in f:
            return "sse"
        return "none"

    @property
    def vnni(self) -> bool:
        """True if the CPU has an INT8 dot-product instruction (AVX-512 VNNI, AVX-VNNI, Arm dot)."""
        return bool({"avx512_vnni", "avx_vnni", "asimddp"} & self.flags)

    @property
    def peak_fp32_gflops(self) -> float | None:
        """cores x clock x FLOPs per cycle; None if the clock is unknown."""
        clock = self.max_clock_mhz or self.clock_mhz
        if clock is None:
            return None
        return self.physical_cores * clock / 1000.0 * flops_per_cycle(self.simd)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready view, with the derived SIMD level and peak."""
        return {
            "model": self.model,
            "vendor": self.vendor,
            "arch": self.arch,
            "logical_cores": self.logical_cores,
            "physical_cores": self.physical_cores,
            "clock_mhz": self.clock_mhz,
            "max_clock_mhz": self.max_clock_mhz,
            "simd": self.simd,
            "avx512f": "avx512f" in self.flags,
            "avx512_vnni": "avx512_vnni" in self.flags,
            "avx_vnni": "avx_vnni" in self.flags,
            "neon": self.simd == "neon",
            "vnni": self.vnni,
            "peak_fp32_gflops": self.peak_fp32_gflops,
        }


def _blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def read_cpu_info(paths: HostPaths | None = None, *, arch: str | None = None) -> CpuInfo:
    """Parse /proc/cpuinfo and cpufreq below ``paths`` (the live host by default)."""
    paths = paths or HostPaths()
    text = read_text(paths.proc_root / "cpuinfo") or ""
    blocks = _blocks(text)
    procs = [b for b in blocks if "processor" in b and b["processor"].isdigit()]
    header = blocks[0] if blocks else {}
    first = procs[0] if procs else header
    flags_text = first.get("flags") or first.get("features") or ""
    flags = frozenset(flags_text.split())
    model = (
        first.get("model name")
        or header.get("hardware")
        or header.get("model")
        or first.get("cpu model")
        or "unknown"
    )
    vendor = first.get("vendor_id") or (
        f"arm:{first['cpu implementer']}" if "cpu implementer" in first else "unknown"
    )
    logical = len(procs) or os.cpu_count() or 1
    cores = {(b.get("physical id", "0"), b.get("core id")) for b in procs if "core id" in b}
    physical = len(cores) if cores else logical
    mhz = [float(b["cpu mhz"]) for b in procs if _is_float(b.get("cpu mhz"))]
    max_khz = read_int(paths.sys_root / "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if arch is None:
        arch = "aarch64" if ("asimd" in flags or "cpu implementer" in first) else None
        arch = arch or ("x86_64" if "sse2" in flags else platform.machine())
    return CpuInfo(
        model=model,
        vendor=vendor,
        arch=arch,
        logical_cores=logical,
        physical_cores=physical,
        clock_mhz=max(mhz) if mhz else None,
        max_clock_mhz=max_khz / 1000.0 if max_khz else None,
        flags=flags,
    )


def _is_float(value: str | None) -> bool:
    if value is None:
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True

"""Thermal zones of /sys/class/thermal: the kernel's temperature sensors, on any Linux host."""

from __future__ import annotations

from edgetier.hardware._paths import HostPaths, read_int, read_text

__all__ = ["read_thermal_zones"]

# Jetson Orin reports zones of powered-off clusters (CV0, GPU when idle) as -256 C.
_MIN_VALID_C = -40.0


def read_thermal_zones(paths: HostPaths | None = None) -> dict[str, float]:
    """Zone type -> temperature in degrees C; invalid or unreadable zones are left out."""
    paths = paths or HostPaths()
    base = paths.sys_root / "class/thermal"
    temps: dict[str, float] = {}
    if not base.is_dir():
        return temps
    for zone in sorted(base.glob("thermal_zone*")):
        milli_c = read_int(zone / "temp")
        if milli_c is None:
            continue
        temp_c = milli_c / 1000.0
        if temp_c <= _MIN_VALID_C:
            continue
        name = read_text(zone / "type") or zone.name
        if name in temps:
            name = f"{name}.{zone.name.removeprefix('thermal_zone')}"
        temps[name] = temp_c
    return temps

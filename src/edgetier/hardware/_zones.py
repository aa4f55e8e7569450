"""Thermal zones of /sys/class/thermal: the kernel's temperature sensors, on any Linux host,
and the one temperature a governor should act on."""

from __future__ import annotations

from edgetier.hardware._paths import HostPaths, read_int, read_text

__all__ = ["governing_temperature_c", "read_thermal_zones"]

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


# Sensors that report a constant rather than a temperature: the PMIC die sensor of the Nano,
# TX2 and Xavier boards (sysfs zone "PMIC-Die", tegrastats "PMIC") reads 100 C until an
# over-temperature alarm trips. jetson-stats leaves it out for the same reason.
_PLACEHOLDER_PREFIXES = ("pmic",)
_MAX_VALID_C = 150.0


def governing_temperature_c(temps: dict[str, float], zone: str | None = None) -> float | None:
    """The temperature a thermal governor acts on: ``zone`` where named, else the hottest
    sensor that measures (placeholder sensors and powered-off ones left out); None if none."""
    if zone is not None:
        return temps.get(zone)
    real = [
        t
        for name, t in temps.items()
        if not name.lower().startswith(_PLACEHOLDER_PREFIXES) and _MIN_VALID_C < t < _MAX_VALID_C
    ]
    return max(real) if real else None

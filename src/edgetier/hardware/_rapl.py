"""Intel RAPL energy counters through the powercap sysfs interface (also used on AMD Zen).

Each top-level zone ``intel-rapl:N`` (a CPU package) holds ``energy_uj``, a counter that
wraps at ``max_energy_range_uj``; ``RaplCounter`` turns successive readings into joules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgetier.hardware._paths import HostPaths, read_int, read_text

__all__ = ["RaplCounter", "RaplZone", "counter_delta", "find_rapl_zones"]


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone: its name (``package-0``, ``dram``) and sysfs directory."""

    name: str
    path: Path
    max_energy_range_uj: int

    def read_uj(self) -> int | None:
        """The raw counter in microjoules; None where unreadable (root-only since 2020 CVEs)."""
        return read_int(self.path / "energy_uj")


def find_rapl_zones(paths: HostPaths | None = None) -> list[RaplZone]:
    """The package-level RAPL zones whose counters this process can read."""
    paths = paths or HostPaths()
    base = paths.sys_root / "class/powercap"
    zones: list[RaplZone] = []
    if not base.is_dir():
        return zones
    for entry in sorted(base.iterdir()):
        # package zones are "intel-rapl:N"; sub-zones "intel-rapl:N:M" are parts of a package
        prefix, _, index = entry.name.partition(":")
        if prefix != "intel-rapl" or not index.isdigit():
            continue
        max_range = read_int(entry / "max_energy_range_uj")
        zone = RaplZone(read_text(entry / "name") or entry.name, entry, max_range or 2**32)
        if max_range and zone.read_uj() is not None:
            zones.append(zone)
    return zones


def counter_delta(previous: int, current: int, max_range: int) -> int:
    """The increase of a wrapping counter between two readings (at most one wrap)."""
    if current >= previous:
        return current - previous
    return max_range - previous + current


class RaplCounter:
    """Accumulates joules over the package zones; call ``poll`` at least once per wrap period."""

    def __init__(self, zones: list[RaplZone]) -> None:
        if not zones:
            raise ValueError("zones must hold at least one RAPL zone, got none")
        self.zones = zones
        self._last: list[int | None] = [z.read_uj() for z in zones]
        self.total_uj = 0

    def poll(self) -> float:
        """Read every zone, add what was used since the last poll, return the total in joules."""
        for i, zone in enumerate(self.zones):
            now = zone.read_uj()
            last = self._last[i]
            if now is not None and last is not None:
                self.total_uj += counter_delta(last, now, zone.max_energy_range_uj)
            self._last[i] = now if now is not None else last
        return self.total_uj / 1e6

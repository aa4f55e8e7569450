"""Energy per inference: the hardware package's meter around a measurement window.

The meter comes from :func:`edgetier.hardware.open_energy_meter` (NVML, Jetson INA3221 /
tegrastats, Intel RAPL, or a TDP x utilisation estimate labelled ``estimated``).
Sources that give power rather than an energy counter are integrated by the hardware
package (``edgetier.hardware.integrate_power``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

__all__ = ["EnergyProbe", "EnergyReading", "energy_label"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnergyReading:
    """Joules used during one window and where the figure came from."""

    joules: float
    source: str
    estimated: bool

    def per_inference(self, inferences: int) -> float | None:
        """Joules per inference, or None when nothing completed."""
        return self.joules / inferences if inferences > 0 else None


def energy_label(source: str | None, estimated: bool) -> str:
    """How a report names an energy source: estimates always say so."""
    if source is None:
        return "n/a"
    return f"estimated ({source})" if estimated else f"measured ({source})"


class EnergyProbe:
    """Opens the best energy meter once and measures windows with it.

    Where the hardware package or every sensor is missing, :attr:`unavailable` says why and
    :meth:`stop` returns None: a missing figure is reported as missing, never invented.
    """

    def __init__(self, device: str | None = None, *, enabled: bool = True) -> None:
        self._meter: Any = None
        self.unavailable: str | None = None
        if not enabled:
            self.unavailable = "energy measurement disabled"
            return
        try:
            from edgetier.hardware import open_energy_meter
        except ImportError as exc:
            self.unavailable = f"edgetier.hardware has no energy meter ({exc})"
            return
        try:
            self._meter = open_energy_meter(device)
        except Exception as exc:  # any sensor failure must not stop a benchmark
            self.unavailable = f"no energy meter could be opened: {exc}"

    @property
    def source(self) -> str | None:
        return None if self._meter is None else str(self._meter.source)

    @property
    def estimated(self) -> bool:
        return bool(self._meter is not None and self._meter.estimated)

    def start(self) -> None:
        if self._meter is not None:
            self._meter.start()

    def stop(self) -> EnergyReading | None:
        if self._meter is None:
            return None
        try:
            joules = float(self._meter.stop())
        except Exception as exc:
            _log.warning("energy meter %s failed: %s", self.source, exc)
            return None
        return EnergyReading(joules, str(self._meter.source), bool(self._meter.estimated))

    def close(self) -> None:
        if self._meter is not None:
            self._meter.close()
            self._meter = None

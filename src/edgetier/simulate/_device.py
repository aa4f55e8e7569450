"""What a simulated node is (a catalog profile in one of the four tiers) and the figures
it reports: utilisation from what it was told to run, power from the catalog's idle and
TDP figures, temperature from a first-order thermal model that an overheating node's
failed fan drives past the throttle limit.

The figures are a model, never a measurement, and every summary says so (``simulated``)::

    pool = profile_pool({"edge": 1.0})
    device = SimDevice(pool[0][1], overheat_at_s=60.0, rng=random.Random(1))
    summary = device.sample(now_s=65.0, load=0.4)      # TelemetrySummary(simulated=True)
    device.throttled                                   # True once it runs past 87 °C
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

from edgetier.control import Condition, TelemetrySummary

__all__ = [
    "AMBIENT_C",
    "CLOUD_PROFILES",
    "DEFAULT_MIX",
    "THERMAL_LIMIT_C",
    "SimDevice",
    "draw_profiles",
    "profile_pool",
]

TIERS = ("terminal", "edge", "region", "cloud")
DEFAULT_MIX: dict[str, float] = {"terminal": 0.4, "edge": 0.4, "region": 0.15, "cloud": 0.05}
"""The share of nodes per tier: many small devices, few data-centre GPUs."""

CLOUD_PROFILES = ("a100-sxm4-80gb", "a100-pcie-40gb", "h100-sxm5-80gb", "h100-pcie-80gb")
"""The catalog has no ``cloud`` tier of its own: cloud nodes present its data-centre GPUs."""

THERMAL_LIMIT_C = 87.0
"""Where a simulated node throttles; stated to the controller as ``thermal_limit_c``."""
THERMAL_CLEAR_C = 5.0
"""Hysteresis: a throttled node clears once this far below its limit."""
AMBIENT_C = 30.0
FULL_LOAD_RISE_C = 30.0
"""A healthy node sits at ``AMBIENT_C`` idle and this much warmer at full load."""
FAN_FAILURE_RISE_C = 65.0
"""With its fan failed a node runs this much over ambient even idle: past the limit."""


def profile_pool(mix: dict[str, float]) -> list[tuple[str, Any]]:
    """``(tier, DeviceProfile)`` pairs to draw from, each tier weighted by ``mix``.

    Every catalog profile of a tier appears; the tier's weight is split between them."""
    from edgetier.hardware import load_catalog

    catalog = load_catalog()
    pool: list[tuple[str, Any]] = []
    for tier in TIERS:
        if mix.get(tier, 0.0) <= 0:
            continue
        if tier == "cloud":
            devices = [catalog.get(p) for p in CLOUD_PROFILES]
        else:
            devices = [d for d in catalog.devices if d.tier == tier]
        pool.extend((tier, d) for d in devices)
    return pool


def draw_profiles(mix: dict[str, float], count: int, rng: random.Random) -> list[tuple[str, Any]]:
    """``count`` nodes' (tier, profile): tiers in proportion to ``mix`` (largest remainder,
    so 1,000 nodes at 40 % give exactly 400), profiles drawn within the tier."""
    pool = profile_pool(mix)
    by_tier: dict[str, list[Any]] = {}
    for tier, device in pool:
        by_tier.setdefault(tier, []).append(device)
    total = sum(mix[t] for t in by_tier)
    exact = {t: count * mix[t] / total for t in by_tier}
    counts = {t: math.floor(v) for t, v in exact.items()}
    for t in sorted(by_tier, key=lambda t: exact[t] - counts[t], reverse=True):
        if sum(counts.values()) >= count:
            break
        counts[t] += 1
    drawn = [(t, rng.choice(by_tier[t])) for t in TIERS if t in counts for _ in range(counts[t])]
    rng.shuffle(drawn)
    return drawn


class SimDevice:
    """One node's hardware model. ``sample`` advances the temperature to ``now_s`` and
    returns the summary a heartbeat carries; ``conditions`` the Throttled condition."""

    def __init__(
        self,
        device: Any,
        *,
        rng: random.Random,
        overheat_at_s: float | None = None,
        overheat_for_s: float = math.inf,
        thermal_tau_s: float = 30.0,
    ) -> None:
        self.device = device
        self.rng = rng
        self.overheat_at_s = overheat_at_s
        self.overheat_for_s = overheat_for_s
        self.thermal_tau_s = thermal_tau_s
        self.temperature_c = AMBIENT_C + rng.uniform(0.0, 5.0)
        self.throttled = False
        self._last_s: float | None = None

    def fan_failed(self, now_s: float) -> bool:
        start = self.overheat_at_s
        return start is not None and start <= now_s < start + self.overheat_for_s

    def _target_c(self, now_s: float, load: float) -> float:
        rise = FULL_LOAD_RISE_C * load
        if self.fan_failed(now_s):
            rise += FAN_FAILURE_RISE_C
        return AMBIENT_C + rise

    def sample(self, now_s: float, load: float) -> TelemetrySummary:
        """The figures at ``now_s`` (monotonic seconds) under ``load`` (0-1 of the device)."""
        dt_s = 0.0 if self._last_s is None else max(now_s - self._last_s, 0.0)
        self._last_s = now_s
        target = self._target_c(now_s, load)
        self.temperature_c += (target - self.temperature_c) * (
            1.0 - math.exp(-dt_s / self.thermal_tau_s)
        )
        if self.temperature_c >= THERMAL_LIMIT_C:
            self.throttled = True
        elif self.temperature_c < THERMAL_LIMIT_C - THERMAL_CLEAR_C:
            self.throttled = False
        utilisation = min(max(load * self.rng.uniform(0.9, 1.1), 0.0), 1.0)
        if self.throttled:
            utilisation = min(1.0, utilisation * 1.25)  # the same work at lower clocks
        tdp_w, idle_w = self.device.tdp_w, self.device.idle_w
        power_w = None
        if tdp_w is not None:
            base_w = idle_w if idle_w is not None else 0.2 * tdp_w
            power_w = round(base_w + utilisation * (tdp_w - base_w), 2)
        memory_gb = self.device.memory_gb or 4.0
        return TelemetrySummary(
            time=datetime.now(UTC),
            utilisation=round(utilisation, 4),
            temperature_c=round(self.temperature_c, 1),
            power_w=power_w,
            memory_used_bytes=int(memory_gb * 2**30 * (0.1 + 0.5 * utilisation)),
            simulated=True,
        )

    def conditions(self) -> list[Condition]:
        if self.throttled:
            return [
                Condition(
                    type="Throttled",
                    status="True",
                    reason="ThermalLimit",
                    message=f"simulated {self.device.id}: {self.temperature_c:.1f} °C, "
                    f"limit {THERMAL_LIMIT_C:g} °C",
                )
            ]
        return [Condition(type="Throttled", status="False", reason="Simulated")]

"""What the agent says its node is (tier, catalog profile, capacity) and how it is doing
(telemetry), measured on this machine or presented for a catalog profile.

A node presents a profile (``edgetier agent --profile jetson-xavier-nx``) so that several
agents on one host can stand for a fleet of different devices. Its telemetry is then a
model of that device, never a measurement of it, and says so (``simulated``)::

    identity = identify(settings)            # NodeIdentity(profile="jetson-xavier-nx", ...)
    telemetry = open_telemetry(identity)
    summary = telemetry.sample()             # TelemetrySummary(..., simulated=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psutil

from edgetier.agent._settings import AgentSettings, TierName
from edgetier.control import Condition, TelemetrySummary
from edgetier.errors import ConfigError, NotFoundError

__all__ = [
    "MeasuredTelemetry",
    "NodeIdentity",
    "PresentedTelemetry",
    "Telemetry",
    "identify",
    "open_telemetry",
]

THERMAL_REASONS = frozenset(
    {"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)
"""NVML clock-event reasons that mean the GPU slows down for heat or power (not a cap
that every GPU at full load meets)."""

PRESENTED_IDLE_C = 35.0
PRESENTED_FULL_LOAD_RISE_C = 30.0
"""The presented temperature: this idle figure, rising linearly by this much at full load
(a fan-cooled module in a 25 °C room; a model, not a measurement)."""


@dataclass(frozen=True)
class NodeIdentity:
    """The node as the agent enrols it."""

    profile: str
    tier: TierName
    presented: bool
    capacity: dict[str, float] = field(default_factory=dict)
    device: Any = None  # the catalog's DeviceProfile, when the catalog has the id


class Telemetry(Protocol):
    """One summary per heartbeat, and the node conditions it implies."""

    def sample(self) -> TelemetrySummary: ...

    def conditions(self) -> list[Condition]: ...


def identify(settings: AgentSettings) -> NodeIdentity:
    """The presented profile (``--profile``), else the probed machine's."""
    from edgetier.hardware import get_profile

    if settings.profile is not None:
        try:
            device = get_profile(settings.profile)
        except NotFoundError as exc:
            raise ConfigError(f"--profile: {exc.message}") from None
        return NodeIdentity(device.id, settings.tier or device.tier, True, {}, device)
    from edgetier.hardware import probe

    machine = probe()
    if machine.profile is None:
        raise ConfigError(
            "the hardware probe matched no catalog profile on this machine "
            f"({'; '.join(machine.notes) or 'no notes'}); give --profile CATALOG_ID"
        )
    memory_bytes = next(
        (g.memory_total_bytes for g in machine.gpus if g.memory_total_bytes),
        machine.memory_bytes,
    )
    capacity = {"memory_gb": round(memory_bytes / 2**30, 2)} if memory_bytes else {}
    return NodeIdentity(
        machine.profile.id, settings.tier or machine.profile.tier, False, capacity, machine.profile
    )


def open_telemetry(identity: NodeIdentity) -> Telemetry:
    if identity.presented:
        return PresentedTelemetry(identity.device)
    return MeasuredTelemetry()


class MeasuredTelemetry:
    """This machine's figures from :class:`edgetier.hardware.TelemetrySampler`."""

    def __init__(self, sampler: Any = None) -> None:
        if sampler is None:
            from edgetier.hardware import TelemetrySampler

            sampler = TelemetrySampler()
        self._sampler = sampler
        self._throttled: list[str] = []

    def sample(self) -> TelemetrySummary:
        s = self._sampler.sample()
        gpu_utils = [g.utilization_pct for g in s.gpus if g.utilization_pct is not None]
        if gpu_utils:
            utilisation: float | None = max(gpu_utils) / 100.0
        elif s.soc_gpu_percent is not None or s.cpu_percent is not None:
            busiest = max(x for x in (s.soc_gpu_percent, s.cpu_percent) if x is not None)
            utilisation = busiest / 100.0
        else:
            utilisation = None
        gpu_memory = [g.memory_used_bytes for g in s.gpus if g.memory_used_bytes is not None]
        self._throttled = [
            f"GPU {g.index} ({', '.join(sorted(THERMAL_REASONS & set(g.throttle_reasons)))})"
            for g in s.gpus
            if g.throttle_reasons and THERMAL_REASONS & set(g.throttle_reasons)
        ]
        return TelemetrySummary(
            time=datetime.fromtimestamp(s.time_s, UTC),
            utilisation=None if utilisation is None else min(max(utilisation, 0.0), 1.0),
            temperature_c=s.max_temperature_c,
            power_w=s.power_w,
            memory_used_bytes=sum(gpu_memory) if gpu_memory else s.memory_used_bytes,
        )

    def conditions(self) -> list[Condition]:
        if self._throttled:
            return [
                Condition(
                    type="Throttled",
                    status="True",
                    reason="ClocksSlowedDown",
                    message="; ".join(self._throttled),
                )
            ]
        return [Condition(type="Throttled", status="False", reason="ClocksNormal")]


class PresentedTelemetry:
    """Figures plausible for a catalog device, marked ``simulated``.

    The load is the agent's own: the CPU share of its children (the inference server and
    the pipelines it runs) on this host. Power is the catalog's TDP times that load (above
    its idle figure where the catalog gives one), the model of EdgeTier's estimated energy
    meter; temperature follows a fixed idle-plus-rise model; memory is what the children
    hold. None where the catalog lacks the figure.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self._me = psutil.Process()
        self._procs: dict[int, psutil.Process] = {}
        self._cpus = psutil.cpu_count() or 1

    def _children_load(self) -> tuple[float, int]:
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            children = []
        seen: dict[int, psutil.Process] = {}
        busy_pct, rss = 0.0, 0
        for child in children:
            proc = self._procs.get(child.pid, child)
            try:
                busy_pct += proc.cpu_percent(interval=None)  # since the last call; 0 at first
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
            seen[child.pid] = proc
        self._procs = seen
        return min(busy_pct / (100.0 * self._cpus), 1.0), rss

    def sample(self) -> TelemetrySummary:
        load, rss = self._children_load()
        idle_w, tdp_w = self.device.idle_w, self.device.tdp_w
        if tdp_w is not None:
            base_w = idle_w if idle_w is not None else 0.0  # as the energy estimate's model
            power_w: float | None = base_w + load * (tdp_w - base_w)
        else:
            power_w = None
        return TelemetrySummary(
            time=datetime.now(UTC),
            utilisation=round(load, 4),
            temperature_c=round(PRESENTED_IDLE_C + PRESENTED_FULL_LOAD_RISE_C * load, 1),
            power_w=None if power_w is None else round(power_w, 2),
            memory_used_bytes=rss,
            simulated=True,
        )

    def conditions(self) -> list[Condition]:
        return [
            Condition(
                type="Throttled",
                status="False",
                reason="Simulated",
                message=f"presenting {self.device.id}: no sensor to read",
            )
        ]

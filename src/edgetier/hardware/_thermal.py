"""A first-order thermal model of a device and a thermal governor that holds it under target.

    from edgetier.hardware import ThermalModel, ThermalGovernor, simulate
    run = simulate(ThermalModel.passive_jetson_nano(ambient_c=40.0), ThermalGovernor(), 3600)
    print(run.mean_throughput_fraction, [e.action for e in run.events])

Model: ``C dT/dt = P - (T - T_amb) / R``. Power is ``P_idle + P_dyn x busy x clock^2`` (DVFS
lowers voltage with clock, so dynamic power falls about with its square). Without a
governor the SoC's own throttling cuts the clock to ``throttle_clock`` at ``trip_c`` and
restores it below ``trip_c - trip_hysteresis_c``: a saw-tooth that costs throughput. The
governor instead steps the device through ``levels`` (clock cap / power mode, batch, frame
rate, low-priority streams) with hysteresis, and every change is a ``GovernorEvent``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_LEVELS",
    "GovernorEvent",
    "OperatingLevel",
    "SimRun",
    "SimStep",
    "ThermalGovernor",
    "ThermalModel",
    "simulate",
]


@dataclass(frozen=True)
class ThermalModel:
    """Lumped junction-to-ambient model of one device and its cooling."""

    ambient_c: float
    r_th_c_per_w: float  # junction to ambient, through the heatsink (and fan, if active)
    c_th_j_per_c: float  # heat capacity of die, module and heatsink
    idle_power_w: float
    dynamic_power_w: float  # added at full load and full clock
    trip_c: float  # the SoC starts throttling here
    trip_hysteresis_c: float
    throttle_clock: float  # clock fraction while the SoC's own throttling is engaged
    cooling: str = "passive"

    @classmethod
    def passive_jetson_nano(cls, ambient_c: float = 40.0) -> ThermalModel:
        """Jetson Nano in its 10 W mode on a passive heatsink (parameters: docs/thermal.md)."""
        return cls(
            ambient_c=ambient_c,
            r_th_c_per_w=6.0,
            c_th_j_per_c=60.0,
            idle_power_w=2.0,
            dynamic_power_w=8.0,
            trip_c=87.0,
            trip_hysteresis_c=5.0,
            throttle_clock=0.5,
        )

    def power_w(self, busy: float, clock: float) -> float:
        return self.idle_power_w + self.dynamic_power_w * busy * clock**2

    def steady_c(self, power_w: float) -> float:
        return self.ambient_c + power_w * self.r_th_c_per_w

    def step_c(self, temp_c: float, power_w: float, dt_s: float) -> float:
        """Exact solution of the first-order model over ``dt_s`` at constant power."""
        tau_s = self.r_th_c_per_w * self.c_th_j_per_c
        target = self.steady_c(power_w)
        return target + (temp_c - target) * math.exp(-dt_s / tau_s)


@dataclass(frozen=True)
class OperatingLevel:
    """One rung of the governor's ladder, from full service (0) downwards."""

    name: str
    clock_cap: float = 1.0  # GPU clock cap (nvpmodel mode or devfreq max_freq) as a fraction
    batch_size: int = 8
    fps_scale: float = 1.0  # frame rate kept on every stream
    shed_low_priority: bool = False


# Clock caps first: on the DVFS curve they save power about with the square of the clock
# lost, while cutting frames saves it only linearly. A smaller batch follows deep clock cuts
# so that each batch still finishes within the latency target; frame rate and low-priority
# streams go last.
DEFAULT_LEVELS: tuple[OperatingLevel, ...] = (
    OperatingLevel("full"),
    OperatingLevel("clock 95%", clock_cap=0.95),
    OperatingLevel("clock 90%", clock_cap=0.9),
    OperatingLevel("clock 85%", clock_cap=0.85),
    OperatingLevel("clock 80%", clock_cap=0.8),
    OperatingLevel("clock 70%, batch 4", clock_cap=0.7, batch_size=4),
    OperatingLevel("clock 70%, batch 4, fps 75%", 0.7, 4, fps_scale=0.75),
    OperatingLevel("clock 60%, batch 2, shed low", 0.6, 2, 1.0, shed_low_priority=True),
)


@dataclass(frozen=True)
class GovernorEvent:
    """One decision: when, why, and from which level to which."""

    time_s: float
    action: str  # "step_down" | "step_up"
    from_level: str
    to_level: str
    temperature_c: float
    reason: str


@dataclass
class ThermalGovernor:
    """Steps down when the temperature crosses ``target_c`` and back up only once it is
    ``hysteresis_c`` below it and has stayed there for ``hold_s`` (no flapping)."""

    target_c: float = 84.0
    hysteresis_c: float = 3.0
    hold_s: float = 120.0
    min_dwell_s: float = 90.0
    levels: Sequence[OperatingLevel] = DEFAULT_LEVELS
    level: int = 0
    events: list[GovernorEvent] = field(default_factory=list)
    _cool_since: float | None = None
    _last_change_s: float = -math.inf

    @property
    def current(self) -> OperatingLevel:
        return self.levels[self.level]

    def observe(self, time_s: float, temperature_c: float) -> GovernorEvent | None:
        """Feed one temperature reading (live, recorded or simulated); maybe change level."""
        if time_s - self._last_change_s < self.min_dwell_s:
            return None
        if temperature_c >= self.target_c and self.level < len(self.levels) - 1:
            return self._move(
                time_s, temperature_c, +1, f"{temperature_c:.1f} C >= target {self.target_c:g} C"
            )
        if temperature_c <= self.target_c - self.hysteresis_c and self.level > 0:
            self._cool_since = time_s if self._cool_since is None else self._cool_since
            if time_s - self._cool_since >= self.hold_s:
                return self._move(
                    time_s,
                    temperature_c,
                    -1,
                    f"{temperature_c:.1f} C <= "
                    f"{self.target_c - self.hysteresis_c:g} C for {self.hold_s:g} s",
                )
        else:
            self._cool_since = None
        return None

    def _move(self, time_s: float, temp_c: float, delta: int, reason: str) -> GovernorEvent:
        old = self.current.name
        self.level += delta
        self._last_change_s, self._cool_since = time_s, None
        event = GovernorEvent(
            time_s, "step_down" if delta > 0 else "step_up", old, self.current.name, temp_c, reason
        )
        self.events.append(event)
        return event


@dataclass(frozen=True)
class SimStep:
    time_s: float
    temperature_c: float
    power_w: float
    clock: float
    throughput_fraction: float  # served / demanded, all streams
    high_priority_fraction: float  # served / demanded, high-priority streams
    level: str


@dataclass
class SimRun:
    steps: list[SimStep]
    events: list[GovernorEvent]

    def _mean(self, attr: str, after_s: float) -> float:
        vals: list[float] = [getattr(s, attr) for s in self.steps if s.time_s >= after_s]
        return sum(vals) / len(vals)

    @property
    def mean_throughput_fraction(self) -> float:
        """Mean over the second half of the run (after the warm-up)."""
        return self._mean("throughput_fraction", self.steps[-1].time_s / 2)

    @property
    def mean_high_priority_fraction(self) -> float:
        return self._mean("high_priority_fraction", self.steps[-1].time_s / 2)

    @property
    def max_temperature_c(self) -> float:
        return max(s.temperature_c for s in self.steps)


# relative throughput of a batch against batch 8 (GPU occupancy falls with small batches)
_BATCH_EFFICIENCY = {1: 0.8, 2: 0.88, 4: 0.95, 8: 1.0}


def simulate(
    model: ThermalModel,
    governor: ThermalGovernor | None,
    duration_s: float,
    *,
    dt_s: float = 1.0,
    high_priority_share: float = 0.5,
    start_c: float | None = None,
) -> SimRun:
    """Run the device at a demand equal to its full-clock capacity for ``duration_s``.

    ``high_priority_share`` of the demand comes from high-priority streams; shedding drops
    the rest, and a frame-rate cut applies to low-priority streams first.
    """
    temp = model.ambient_c if start_c is None else start_c
    soc_throttled = False
    steps: list[SimStep] = []
    t = 0.0
    while t <= duration_s:
        level = governor.current if governor else DEFAULT_LEVELS[0]
        if temp >= model.trip_c:
            soc_throttled = True
        elif temp <= model.trip_c - model.trip_hysteresis_c:
            soc_throttled = False
        clock = min(level.clock_cap, model.throttle_clock if soc_throttled else 1.0)
        capacity = clock * _BATCH_EFFICIENCY.get(level.batch_size, 1.0)
        low_share = 1.0 - high_priority_share
        # demand after the level's cuts: fps cut falls on low-priority streams first
        low_demand = 0.0 if level.shed_low_priority else low_share
        cut = (1.0 - level.fps_scale) * 1.0
        low_demand = max(0.0, low_demand - cut)
        high_demand = high_priority_share - max(0.0, cut - low_share)
        demand = high_demand + low_demand
        served = min(demand, capacity)
        busy = served / capacity if capacity > 0 else 0.0
        high_served = min(high_demand, served)  # the scheduler serves high priority first
        if governor is None:  # no priorities without a governor: loss spreads evenly
            high_served = high_priority_share * served / demand if demand else 0.0
        power = model.power_w(busy, clock)
        steps.append(
            SimStep(t, temp, power, clock, served, high_served / high_priority_share, level.name)
        )
        if governor is not None:
            governor.observe(t, temp)
        temp = model.step_c(temp, power, dt_s)
        t += dt_s
    return SimRun(steps, list(governor.events) if governor else [])

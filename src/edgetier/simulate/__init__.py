"""The fleet simulator: many lightweight simulated nodes against a real controller.

Each node speaks the agent protocol as ``edgetier agent`` does (enrolment with a one-time
token, heartbeats with telemetry, the desired-state long poll, artifact downloads, the
numbered outbox) but runs nothing: its telemetry comes from a model of its catalog
profile, and a fraction of the fleet overheats, loses its link or flaps. A thousand nodes
fit in one process beside the controller::

    settings = SimulationSettings(controllers=[url], operator_token=token, nodes=1000,
                                  duration_s=300, heartbeat_s=10)
    final = asyncio.run(FleetSimulation(settings).run(progress=lambda p: print(p.line())))
    # or: edgetier fleet simulate --nodes 1000 --heartbeat-s 10 --duration-s 300
"""

from __future__ import annotations

from edgetier.simulate._device import DEFAULT_MIX, THERMAL_LIMIT_C, SimDevice, draw_profiles
from edgetier.simulate._fleet import FleetSimulation, Progress, SimulationSettings

__all__ = [
    "DEFAULT_MIX",
    "THERMAL_LIMIT_C",
    "FleetSimulation",
    "Progress",
    "SimDevice",
    "SimulationSettings",
    "draw_profiles",
]

"""Hardware awareness: device catalog, local probe, telemetry, energy, power and thermal.

from edgetier.hardware import fingerprint, open_energy_meter, probe
print(probe().profile_id, fingerprint()["id"])
meter = open_energy_meter(); meter.start(); ...; joules = meter.stop()
"""

from __future__ import annotations

from edgetier.hardware._advisor import (
    MAX_UTILISATION,
    Verdict,
    Workload,
    advise,
    batch_time_s,
    candidates,
    estimate,
    peak_rate,
)
from edgetier.hardware._catalog import Catalog, DeviceProfile, PowerMode, get_profile, load_catalog
from edgetier.hardware._energy import (
    EnergyMeter,
    EnergyUnavailableError,
    integrate_power,
    open_energy_meter,
)
from edgetier.hardware._onnx_cost import ModelCost, model_cost
from edgetier.hardware._paths import HostPaths
from edgetier.hardware._power import PowerChange, PowerGovernor, PowerPermissionError, PowerRecord
from edgetier.hardware._probe import Machine, fingerprint, probe
from edgetier.hardware._telemetry import (
    TelemetryCollector,
    TelemetrySample,
    TelemetrySampler,
    sample_from_tegrastats,
)
from edgetier.hardware._thermal import (
    DEFAULT_LEVELS,
    GovernorEvent,
    OperatingLevel,
    SimRun,
    ThermalGovernor,
    ThermalModel,
    simulate,
)
from edgetier.hardware._zones import governing_temperature_c

__all__ = [
    "DEFAULT_LEVELS",
    "MAX_UTILISATION",
    "Catalog",
    "DeviceProfile",
    "EnergyMeter",
    "EnergyUnavailableError",
    "GovernorEvent",
    "HostPaths",
    "Machine",
    "ModelCost",
    "OperatingLevel",
    "PowerChange",
    "PowerGovernor",
    "PowerMode",
    "PowerPermissionError",
    "PowerRecord",
    "SimRun",
    "TelemetryCollector",
    "TelemetrySample",
    "TelemetrySampler",
    "ThermalGovernor",
    "ThermalModel",
    "Verdict",
    "Workload",
    "advise",
    "batch_time_s",
    "candidates",
    "estimate",
    "fingerprint",
    "get_profile",
    "governing_temperature_c",
    "integrate_power",
    "load_catalog",
    "model_cost",
    "open_energy_meter",
    "peak_rate",
    "probe",
    "sample_from_tegrastats",
    "simulate",
]

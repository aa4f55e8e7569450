"""How much of one model a node carries: measured, or the hardware advisor's roofline.

The figure the scheduler needs is the reverse of the advisor's question: not "does this
device carry N inferences/s" but "how many inferences/s does it carry within the latency
target", which :func:`edgetier.hardware.peak_rate` answers from the model's cost (FLOPs,
weight and activation bytes) and the device's catalog profile, batching included. A
measured throughput (``ModelVersionInfo.throughput[profile]``, the saturated rate a bench
run found) replaces the roofline's scale, as the advisor does with bench files; with no
cost to scale, the measured rate is taken as it is and the latency is not checked.
``edgetier.hardware`` is imported on first use, so that importing ``edgetier.control``
(the agent does) stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from edgetier.control._resources import ModelVersionInfo

if TYPE_CHECKING:
    from edgetier.hardware import Catalog, DeviceProfile, ModelCost
    from edgetier.hardware._advisor import Candidate

__all__ = ["NodeCapacity", "node_capacity"]

Basis = Literal["measured", "estimate", "unknown"]
_BATCHES = (1, 2, 4, 8, 16, 32, 64)  # those the advisor tries; the measured rate is the best


@dataclass(frozen=True)
class NodeCapacity:
    """One model on one device profile, the whole device to itself."""

    per_s: float | None
    """The most inferences/s it carries within the latency target (None: unknown)."""
    capped_per_s: float | None
    """The same under the power budget (equal to ``per_s`` without one)."""
    basis: Basis
    batch_size: int | None = None
    energy_j_per_inference: float | None = None
    one_inference_ms: float | None = None
    """Batch 1, at full power: what a latency target below it cannot meet."""
    lowest_mode_w: float | None = None
    """Set when even the device's lowest power mode is above the budget."""
    precision: str | None = None

    @property
    def label(self) -> str:
        """How the figure was found, for explanations."""
        if self.basis == "measured":
            return "measured"
        if self.basis == "estimate":
            return f"roofline estimate at {self.precision}, batch {self.batch_size}"
        return "unknown"


def _cost(model: ModelVersionInfo) -> ModelCost | None:
    from edgetier.hardware import ModelCost

    if model.flops is None:
        return None
    weights = model.weight_bytes if model.weight_bytes is not None else model.size_bytes
    return ModelCost(
        flops=model.flops,
        macs=model.flops / 2,
        weight_bytes=weights,
        activation_bytes=model.activation_bytes or 0,
    )


def _candidate(
    catalog: Catalog, profile_id: str, precision: Literal["fp32", "fp16", "int8"]
) -> Candidate | None:
    """The advisor's view of the device: at the model's own precision where the datasheet
    gives a figure for it (an INT8 or FP16 model), else the advisor's default (what
    TensorRT builds on an accelerator: FP16, or INT8 where no FP16 figure is given)."""
    from edgetier.hardware import candidates

    tries: list[Literal["fp16", "int8"] | None] = [None]
    if precision != "fp32":
        tries.insert(0, precision)
    for wanted in tries:
        for cand in candidates(catalog, precision=wanted):
            if cand.profile.id == profile_id:
                return cand
    return None


def node_capacity(
    model: ModelVersionInfo | None,
    profile: DeviceProfile,
    catalog: Catalog,
    *,
    latency_ms: float,
    power_budget_w: float | None,
) -> NodeCapacity:
    """The device's capacity for ``model`` within ``latency_ms`` (and the power budget)."""
    from edgetier.hardware import MAX_UTILISATION, batch_time_s, peak_rate

    if model is None:
        return NodeCapacity(None, None, "unknown")
    measured = model.throughput.get(profile.id)
    cost = _cost(model)
    cand = _candidate(catalog, profile.id, model.precision)
    if cost is None or cand is None:
        if measured is None:
            return NodeCapacity(None, None, "unknown")
        rate = MAX_UTILISATION * measured
        return NodeCapacity(rate, rate, "measured")
    correction = 1.0
    if measured is not None:
        roofline = max(b / batch_time_s(cost, cand, b, 1.0)[0] for b in _BATCHES)
        correction = measured / roofline
    basis: Basis = "measured" if measured is not None else "estimate"
    full, verdict = peak_rate(cost, cand, latency_ms, correction=correction, basis=basis)
    one_s, _ = batch_time_s(cost, cand, 1, correction)
    capped = full
    lowest: float | None = None
    if power_budget_w is not None:
        capped, _ = peak_rate(
            cost, cand, latency_ms, power_budget_w=power_budget_w, correction=correction
        )
        modes = [m.power_w for m in profile.power_modes if m.power_w is not None]
        if modes and min(modes) > power_budget_w:
            lowest = min(modes)
    return NodeCapacity(
        per_s=full,
        capped_per_s=capped,
        basis=basis,
        batch_size=verdict.batch_size,
        energy_j_per_inference=verdict.energy_j_per_inference,
        one_inference_ms=one_s * 1000,
        lowest_mode_w=lowest,
        precision=cand.precision,
    )

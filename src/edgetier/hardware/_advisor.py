"""The hardware advisor: which catalog devices carry a model at N streams x F fps.

    from edgetier.hardware import Workload, advise
    for v in advise("resnet50.onnx", Workload(streams=8, fps=15, latency_ms=100)):
        print(v.explain())

Each device gets a roofline estimate: a batch of B takes ``max(B x FLOPs / (peak x
efficiency), bytes(B) / (bandwidth x memory efficiency))``. The batch is the largest whose
compute time plus the time to gather it fits the latency target. Measured benchmark results
(``edgetier bench`` JSON) for the same hardware and model replace the estimate's scale.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edgetier.errors import ConfigError
from edgetier.hardware._catalog import Catalog, DeviceProfile, load_catalog
from edgetier.hardware._cpu import flops_per_cycle
from edgetier.hardware._onnx_cost import ModelCost, model_cost
from edgetier.hardware._probe import Machine, fingerprint

__all__ = [
    "COMPUTE_EFFICIENCY",
    "MAX_UTILISATION",
    "MEMORY_EFFICIENCY",
    "Candidate",
    "Verdict",
    "Workload",
    "advise",
    "candidates",
    "estimate",
    "peak_rate",
]

Precision = Literal["fp32", "fp16", "int8"]

# Share of the datasheet peak a tuned runtime reaches on convolutional networks. CPU: MLAS /
# oneDNN GEMM kernels run large convolutions at 70-90 % of the FMA peak, the small late
# layers less. GPU and Jetson: TensorRT typically reaches 30-50 % of the tensor-core peak on
# ResNet-class models at moderate batch (layers with few channels, launch gaps, epilogues).
COMPUTE_EFFICIENCY: dict[str, float] = {"cpu": 0.7, "gpu": 0.4, "jetson": 0.4}
MEMORY_EFFICIENCY = 0.7  # of the datasheet bandwidth that streaming kernels sustain
MAX_UTILISATION = 0.8  # headroom: a device above 80 % busy has queues that grow with jitter
_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0}
_BATCHES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Workload:
    """What must be carried: ``streams x fps`` inferences per second within ``latency_ms``."""

    streams: int
    fps: float
    latency_ms: float
    power_budget_w: float | None = None

    def __post_init__(self) -> None:
        for name in ("streams", "fps", "latency_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.power_budget_w is not None and self.power_budget_w <= 0:
            raise ConfigError(f"power_budget_w must be > 0, got {self.power_budget_w}")

    @property
    def rate_per_s(self) -> float:
        return self.streams * self.fps


@dataclass(frozen=True)
class Candidate:
    """A device as the roofline sees it."""

    profile: DeviceProfile
    label: str
    precision: Precision
    peak_tflops: float
    bandwidth_gbs: float | None
    max_power_w: float | None
    local_id: str | None = None
    notes: tuple[str, ...] = ()


@dataclass
class Verdict:
    """The advisor's answer for one device."""

    candidate: Candidate
    carries: bool
    batch_size: int
    capacity_per_s: float
    batch_latency_ms: float
    utilisation: float
    power_w: float | None
    energy_j_per_inference: float | None
    bound: Literal["compute", "memory", "none"]
    basis: str = "estimate"
    reasons: list[str] = field(default_factory=list)

    @property
    def profile_id(self) -> str:
        return self.candidate.profile.id

    def explain(self) -> str:
        c = self.candidate
        head = "CARRIES" if self.carries else "does not carry"
        return f"{c.label} [{c.precision}]: {head} the load. " + " ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile_id,
            "label": self.candidate.label,
            "tier": self.candidate.profile.tier,
            "precision": self.candidate.precision,
            "carries": self.carries,
            "batch_size": self.batch_size,
            "capacity_per_s": round(self.capacity_per_s, 2),
            "batch_latency_ms": round(self.batch_latency_ms, 2),
            "utilisation": round(self.utilisation, 3),
            "power_w": None if self.power_w is None else round(self.power_w, 2),
            "energy_j_per_inference": None
            if self.energy_j_per_inference is None
            else round(self.energy_j_per_inference, 4),
            "bound": self.bound,
            "basis": self.basis,
            "explanation": self.explain(),
        }


def _accelerator(profile: DeviceProfile, precision: Precision | None) -> Candidate | None:
    options: list[tuple[Precision, float | None]] = [
        ("fp16", profile.dense_fp16_tflops),
        ("int8", profile.dense_int8_tops),
        ("fp32", profile.fp32_tflops),
    ]
    notes: list[str] = []
    for prec, peak in options:
        if peak is None or (precision is not None and prec != precision):
            continue
        if prec == "int8" and precision is None:
            notes.append("The datasheet gives no FP16 figure, so INT8 (TensorRT) is assumed.")
        if profile.kind == "jetson" and prec == "int8" and profile.dla_count:
            notes.append(f"The INT8 figure includes {profile.dla_count} DLA cores.")
        if (profile.int8_sparse and prec == "int8") or (profile.fp16_sparse and prec == "fp16"):
            notes.append("The datasheet figure assumes 2:4 sparsity; the dense half is used.")
        return Candidate(
            profile,
            profile.name,
            prec,
            peak,
            profile.memory_bandwidth_gbs,
            profile.tdp_w,
            notes=tuple(notes),
        )
    return None


def _cpu_candidate(profile: DeviceProfile, machine: Machine | None) -> Candidate:
    spec = profile.cpu
    assert spec is not None
    if machine is not None:
        cpu = machine.cpu
        clock_ghz = (cpu.max_clock_mhz or cpu.clock_mhz or spec.clock_ghz * 1000) / 1000
        cores = cpu.physical_cores
        simd = cpu.simd
        label = f"this machine ({cpu.model}, {cores} cores at {clock_ghz:.2f} GHz, {simd})"
        peak = cores * clock_ghz * flops_per_cycle(simd) / 1000.0
        local_id: str | None = fingerprint(machine)["id"]
        note = (
            f"Peak {peak * 1000:.0f} GFLOPS = {cores} cores x {clock_ghz:.2f} GHz x "
            f"{flops_per_cycle(simd)} FP32 FLOP/cycle ({simd})."
        )
    else:
        cores, label, local_id = spec.cores, f"{profile.name}: {spec.reference}", None
        peak = spec.peak_fp32_tflops
        note = f"Peak {peak:.2f} TFLOPS from the reference part."
    bandwidth = spec.memory_bandwidth_gbs_per_core and spec.memory_bandwidth_gbs_per_core * cores
    power = spec.power_per_core_w and spec.power_per_core_w * cores
    return Candidate(profile, label, "fp32", peak, bandwidth, power, local_id, (note,))


def candidates(
    catalog: Catalog | None = None,
    machine: Machine | None = None,
    *,
    precision: Precision | None = None,
) -> list[Candidate]:
    """Every catalog device, plus this machine's CPU (from the probe) when ``machine`` is set."""
    catalog = catalog or load_catalog()
    found: list[Candidate] = []
    if machine is not None and (precision in (None, "fp32")):
        local = machine.profile
        if local is None or local.kind != "cpu":
            local = catalog.match(f"{machine.cpu.arch} {machine.cpu.simd}", kind="cpu")
        if local is not None:
            found.append(_cpu_candidate(local, machine))
    for profile in catalog.devices:
        if profile.kind == "cpu":
            if precision in (None, "fp32"):
                found.append(_cpu_candidate(profile, None))
        elif (cand := _accelerator(profile, precision)) is not None:
            found.append(cand)
    return found


def batch_time_s(cost: ModelCost, cand: Candidate, batch: int, scale: float) -> tuple[float, str]:
    eff = COMPUTE_EFFICIENCY[cand.profile.kind]
    compute_s = batch * cost.flops / (cand.peak_tflops * 1e12 * eff * scale)
    if cand.bandwidth_gbs is None:
        return compute_s, "compute"
    memory_s = cost.bytes_at(batch, _BYTES[cand.precision]) / (
        cand.bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY * scale
    )
    return (compute_s, "compute") if compute_s >= memory_s else (memory_s, "memory")


def _power_cap(cand: Candidate, work: Workload) -> tuple[float | None, float, str | None]:
    """(power cap in W, speed scale, reason) under the workload's power budget.

    The cap is the highest power mode within budget (or a power limit at the budget where
    the device has no modes); throughput is taken as proportional to the cap, since clocks
    fall with the power limit. A cap of 0 means the device cannot run within the budget.
    """
    budget, tdp = work.power_budget_w, cand.max_power_w
    if budget is None or tdp is None or budget >= tdp:
        return tdp, 1.0, None
    modes = [m.power_w for m in cand.profile.power_modes if m.power_w is not None]
    fitting = [w for w in modes if w <= budget]
    if modes and not fitting:
        return (
            0.0,
            0.0,
            f"Its lowest power mode draws {min(modes):g} W, above the {budget:g} W budget.",
        )
    cap = max(fitting) if fitting else budget
    names = [m.name for m in cand.profile.power_modes if m.power_w == cap]
    where = (
        f"nvpmodel mode {names[0]}"
        if names and cand.profile.kind == "jetson"
        else (f"a {cap:g} W power limit")
    )
    return (
        cap,
        cap / tdp,
        f"Capped to {where} for the {budget:g} W budget: speed x {cap / tdp:.2f}.",
    )


def _best_batch(
    cost: ModelCost, cand: Candidate, work: Workload, scale: float
) -> tuple[int, float, float, str] | None:
    """(batch, capacity/s, batch time s, bound): the smallest batch that carries the load, or
    the fastest one within the latency target; None if even batch 1 misses it."""
    best: tuple[int, float, float, str] | None = None
    for batch in _BATCHES:
        t_s, bound = batch_time_s(cost, cand, batch, scale)
        gather_s = (batch - 1) / work.rate_per_s  # waiting for the batch to fill
        if (t_s + gather_s) * 1000 > work.latency_ms:
            break
        capacity = batch / t_s
        if best is None or capacity > best[1]:
            best = (batch, capacity, t_s, bound)
        if capacity * MAX_UTILISATION >= work.rate_per_s:
            break
    return best


def estimate(
    cost: ModelCost,
    cand: Candidate,
    work: Workload,
    *,
    correction: float = 1.0,
    basis: str = "estimate",
) -> Verdict:
    """The roofline verdict for one device (``correction`` scales its speed, from benchmarks)."""
    cap_w, power_scale, cap_reason = _power_cap(cand, work)
    reasons = [cap_reason] if cap_reason else []
    if power_scale == 0.0:
        return Verdict(cand, False, 1, 0.0, math.inf, math.inf, None, None, "none", basis, reasons)
    scale = correction * power_scale
    best = _best_batch(cost, cand, work, scale)
    if best is None:
        t1, bound = batch_time_s(cost, cand, 1, scale)
        reasons.append(
            f"One inference takes {t1 * 1000:.1f} ms ({bound}-bound), over the "
            f"{work.latency_ms:g} ms latency target."
        )
        reasons.extend(cand.notes)
        return Verdict(
            cand,
            False,
            1,
            1 / t1,
            t1 * 1000,
            work.rate_per_s * t1,
            None,
            None,
            _bound(bound),
            basis,
            reasons,
        )
    batch, capacity, t_s, bound = best
    util = work.rate_per_s / capacity
    unit = "TOPS" if cand.precision == "int8" else "TFLOPS"
    eff = COMPUTE_EFFICIENCY[cand.profile.kind]
    measured = "" if correction == 1.0 else f" x {correction:.2f} measured correction"
    reasons.insert(
        0,
        f"{cost.flops / 1e9:.2f} GFLOPs per inference on {cand.peak_tflops:g} {unit} peak x "
        f"{eff:g} efficiency{measured}: batch {batch} takes {t_s * 1000:.1f} ms "
        f"({bound}-bound), so it serves {capacity:.1f}/s against {work.rate_per_s:g}/s "
        f"needed ({util * 100:.0f} % busy, limit {MAX_UTILISATION * 100:.0f} %).",
    )
    power = energy = None
    if cap_w is not None:
        power, energy = cap_w * min(1.0, util), cap_w / capacity
        reasons.append(f"About {power:.1f} W at this load, {energy:.3f} J per inference.")
    dec = cand.profile.decode_1080p30_streams
    if dec is not None and work.streams > dec:
        reasons.append(
            f"Its video decoder handles {dec} 1080p30 streams, fewer than {work.streams}."
        )
    reasons.extend(cand.notes)
    return Verdict(
        cand,
        util <= MAX_UTILISATION,
        batch,
        capacity,
        t_s * 1000,
        util,
        power,
        energy,
        _bound(bound),
        basis,
        reasons,
    )


def peak_rate(
    cost: ModelCost,
    cand: Candidate,
    latency_ms: float,
    *,
    power_budget_w: float | None = None,
    correction: float = 1.0,
    basis: str = "estimate",
) -> tuple[float, Verdict]:
    """The most inferences/s the device carries within ``latency_ms``, and the verdict there.

    :func:`estimate` answers for a given rate; a scheduler asks the reverse. A batch of B
    carries rates up to ``MAX_UTILISATION x B / t(B)``, and only rates at which it fills in
    time, ``(B - 1) / rate <= latency - t(B)``; the answer is the highest such top over the
    batch sizes (0.0 where even one inference misses the target, or the device cannot run
    within the power budget). The verdict is :func:`estimate`'s at that rate (its power and
    energy per inference included), or at a trickle when the answer is 0.
    """
    probe = Workload(1, 1.0, latency_ms, power_budget_w)
    _, power_scale, _ = _power_cap(cand, probe)
    top = 0.0
    if power_scale > 0:
        for batch in _BATCHES:
            t_s, _ = batch_time_s(cost, cand, batch, correction * power_scale)
            slack_s = latency_ms / 1000 - t_s
            if slack_s < 0:
                break
            rate = MAX_UTILISATION * batch / t_s
            if batch == 1 or (batch - 1) <= rate * slack_s:
                top = max(top, rate)
    rate = top * (1 - 1e-9)  # just inside the limit, so that the verdict at it carries
    work = replace(probe, fps=rate if rate > 0 else 1e-6)
    return rate, estimate(cost, cand, work, correction=correction, basis=basis)


def _bound(text: str) -> Literal["compute", "memory", "none"]:
    return "memory" if text == "memory" else "compute"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _measured(
    bench_files: Iterable[str | Path], model_sha: str | None, cost: ModelCost
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(hardware, result) pairs from bench JSON files that measured this model."""
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for path in bench_files:
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"bench file {path}: cannot read JSON: {exc}") from exc
        if not str(report.get("schema", "")).startswith("edgetier.bench/"):
            raise ConfigError(
                f"bench file {path}: schema must be edgetier.bench/*, got {report.get('schema')!r}"
            )
        model = report.get("model") or {}
        flops = model.get("flops_per_inference")
        same = (model_sha is not None and model.get("sha256") == model_sha) or (
            flops is not None and abs(flops - cost.flops) <= 0.02 * cost.flops
        )
        if same:
            pairs.extend((report.get("hardware") or {}, r) for r in report.get("results", []))
    return pairs


def _correction(
    cand: Candidate, cost: ModelCost, pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]
) -> tuple[float, int] | None:
    ratios: list[float] = []
    for hardware, result in pairs:
        # a CPU profile covers many machines: measured figures apply only to the same machine
        if cand.profile.kind == "cpu":
            same = cand.local_id is not None and hardware.get("id") == cand.local_id
        else:
            same = hardware.get("profile") == cand.profile.id
        if not same or result.get("precision", "fp32") != cand.precision:
            continue
        batch = int(result.get("batch_size") or 1)
        t_s, _ = batch_time_s(cost, cand, batch, 1.0)
        measured = float(result.get("throughput_per_s") or 0.0)
        if measured > 0:
            ratios.append(measured / (batch / t_s))
    if not ratios:
        return None
    return statistics.median(ratios), len(ratios)


def advise(
    model: str | Path,
    work: Workload,
    *,
    bench_files: Iterable[str | Path] = (),
    machine: Machine | None = None,
    catalog: Catalog | None = None,
    precision: Precision | None = None,
) -> list[Verdict]:
    """Every device's verdict, best first: devices that carry the load, least power first."""
    path = Path(model)
    cost = model_cost(path)
    pairs = _measured(bench_files, _sha256(path) if path.is_file() else None, cost)
    verdicts: list[Verdict] = []
    for cand in candidates(catalog, machine, precision=precision):
        corr = _correction(cand, cost, pairs)
        if corr is None:
            verdicts.append(estimate(cost, cand, work))
            continue
        factor, count = corr
        v = estimate(cost, cand, work, correction=factor, basis="measured")
        v.reasons.append(
            f"Corrected with {count} measured result(s) of this model on this hardware: "
            f"measured/estimated = {factor:.2f}."
        )
        verdicts.append(v)
    verdicts.sort(
        key=lambda v: (
            not v.carries,
            v.power_w if v.carries and v.power_w is not None else float("inf"),
            -v.capacity_per_s,
        )
    )
    return [replace(v) for v in verdicts]

"""`edgetier bench server`: closed and open loop against a KServe v2 server.

Drives :mod:`edgetier.bench._loadgen` over a concurrency sweep and/or a list of offered
rates, with repeats, optional sampling of the server process (CPU, peak memory) and the
client's own CPU use, which raises :class:`ClientBottleneckWarning` when it nears a core.
"""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass, field

from edgetier.bench._energy import EnergyProbe
from edgetier.bench._loadgen import LoadResult, RequestSender, Tensors, closed_loop, open_loop
from edgetier.bench._meta import make_report
from edgetier.bench._progress import SweepProgress
from edgetier.bench._sampling import ResourceSampler
from edgetier.bench._schema import BenchReport, BenchResult, ModelInfo
from edgetier.bench._stats import latency_summary, merge_repeats
from edgetier.errors import ConfigError, EdgeTierError

__all__ = [
    "ClientBottleneckWarning",
    "ServerBenchConfig",
    "measure_server",
    "run_server_bench",
    "server_provider",
]

CLIENT_CPU_WARN_PCT = 80.0


class ClientBottleneckWarning(UserWarning):
    """Emitted when the load generator itself uses most of a core: figures may be client-bound."""


@dataclass
class ServerBenchConfig:
    """What `bench server` sweeps: closed-loop concurrencies and/or open-loop rates."""

    url: str
    model: str
    version: str = ""
    batch_size: int = 1
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    rates: list[float] = field(default_factory=list)
    tensors: Tensors = "binary"
    duration_s: float | None = 5.0
    count: int | None = None
    warmup_s: float = 1.0
    repeats: int = 1
    seed: int = 0
    server_pids: list[int] = field(default_factory=list)
    system: str = "edgetier"
    provider: str | None = None
    """None: as the server's model metadata says (``parameters.execution_provider``)."""
    energy: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if any(c < 1 for c in self.concurrency):
            raise ConfigError(f"concurrency values must be >= 1, got {self.concurrency}")
        if any(r <= 0 for r in self.rates):
            raise ConfigError(f"rates must be > 0 requests/s, got {self.rates}")
        if not self.concurrency and not self.rates:
            raise ConfigError("give at least one --concurrency or --rate value")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        if self.rates and self.duration_s is None:
            raise ConfigError("open loop (--rate) runs for --duration-s, not --count")


def _warn_client(result: LoadResult, label: str) -> None:
    if result.client_cpu_percent > CLIENT_CPU_WARN_PCT:
        warnings.warn(
            f"{label}: the load generator used {result.client_cpu_percent:.0f} % of a core "
            f"(above {CLIENT_CPU_WARN_PCT:.0f} %); the client may be the bottleneck",
            ClientBottleneckWarning,
            stacklevel=3,
        )


def _to_result(
    cfg: ServerBenchConfig,
    sender: RequestSender,
    load: LoadResult,
    extra: dict[str, object],
    *,
    concurrency: int | None,
    rate: float | None,
) -> BenchResult:
    if load.requests == 0:
        raise EdgeTierError(
            f"no request to {cfg.model!r} at {cfg.url} succeeded"
            + (f": {load.first_error}" if load.first_error else "")
        )
    return BenchResult(
        system=cfg.system,
        protocol=sender.protocol,
        tensors=cfg.tensors,
        provider=cfg.provider or sender.provider or "unknown",
        batch_size=cfg.batch_size,
        concurrency=concurrency,
        offered_rate_per_s=rate,
        throughput_per_s=load.throughput_per_s,
        latency_ms=latency_summary(load.latencies_ns),
        client_cpu_percent=load.client_cpu_percent,
        requests=load.requests,
        errors=load.errors,
        **extra,  # type: ignore[arg-type]
    )


async def measure_server(
    cfg: ServerBenchConfig,
    sender: RequestSender,
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    probe: EnergyProbe | None = None,
    seed: int = 0,
) -> BenchResult:
    """One closed-loop (concurrency) or open-loop (rate) measurement."""
    sampler = ResourceSampler(cfg.server_pids) if cfg.server_pids else None
    if sampler:
        sampler.start()
    if probe:
        probe.start()
    if rate is not None:
        assert cfg.duration_s is not None
        load = await open_loop(
            sender, rate, duration_s=cfg.duration_s, warmup_s=cfg.warmup_s, seed=seed
        )
    else:
        load = await closed_loop(
            sender,
            concurrency or 1,
            duration_s=cfg.duration_s if cfg.count is None else None,
            count=cfg.count,
            warmup_s=cfg.warmup_s,
        )
    reading = probe.stop() if probe else None
    usage = sampler.stop() if sampler else None
    if sampler:
        sampler.close()
    extra: dict[str, object] = {}
    if usage:
        extra.update(
            cpu_percent=usage.cpu_percent,
            peak_memory_bytes=usage.peak_memory_bytes,
            gpu_util_percent=usage.gpu_util_percent,
        )
    if reading:
        # The meter covers the whole window including warm-up: scale to the window share.
        n = load.requests * load.batch_size
        extra.update(
            energy_j_per_inference=reading.per_inference(n),
            energy_source=reading.source,
            energy_estimated=reading.estimated,
        )
    label = (
        f"{cfg.system} {sender.protocol} c={concurrency}"
        if rate is None
        else (f"{cfg.system} {sender.protocol} rate={rate:g}/s")
    )
    _warn_client(load, label)
    return _to_result(cfg, sender, load, extra, concurrency=concurrency, rate=rate)


async def _run(cfg: ServerBenchConfig) -> tuple[list[BenchResult], list[str]]:
    slots = max([*cfg.concurrency, 64]) if cfg.tensors == "shm" else 1
    sender = RequestSender(
        cfg.url,
        cfg.model,
        batch_size=cfg.batch_size,
        tensors=cfg.tensors,
        version=cfg.version,
        slots=slots,
    )
    await sender.open()
    probe = EnergyProbe(enabled=cfg.energy)
    notes = []
    if probe.unavailable:
        notes.append(f"energy: {probe.unavailable}")
    elif probe.estimated:
        notes.append(f"energy: estimated ({probe.source}), not measured")
    points: list[tuple[int | None, float | None]] = [(c, None) for c in cfg.concurrency]
    points += [(None, r) for r in cfg.rates]
    results = []
    try:
        with SweepProgress(
            len(points) * cfg.repeats, title=f"bench server {cfg.model}", enabled=cfg.progress
        ) as progress:
            for conc, rate in points:
                repeats = []
                for i in range(cfg.repeats):
                    what = f"concurrency {conc}" if rate is None else f"rate {rate:g}/s"
                    progress.phase(f"{what} #{i + 1}")
                    repeats.append(
                        await measure_server(
                            cfg,
                            sender,
                            concurrency=conc,
                            rate=rate,
                            probe=probe,
                            seed=cfg.seed + i,
                        )
                    )
                    progress.advance()
                results.append(merge_repeats(repeats, label=f"{cfg.system} {what}"))
    finally:
        probe.close()
        await sender.close()
    return results, notes


def server_provider(url: str, model: str, version: str = "") -> str | None:
    """The execution provider the server names for ``model`` (None if it names none)."""

    async def read() -> str | None:
        sender = RequestSender(url, model, version=version)
        await sender.open()
        await sender.close()
        return sender.provider

    return asyncio.run(read())


def run_server_bench(
    cfg: ServerBenchConfig, *, command: str | None = None, model: ModelInfo | None = None
) -> BenchReport:
    """Run the sweep against a live server; one report (kind "server")."""
    results, notes = asyncio.run(_run(cfg))
    if model is None:
        model = ModelInfo(name=cfg.model, sha256="unknown (served remotely)")
    return make_report("server", results, model=model, command=command, notes=notes)

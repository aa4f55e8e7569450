"""`edgetier bench compare`: one model on raw ONNX Runtime, EdgeTier, PyTriton and Ray Serve.

Each system runs alone, in its own process on 127.0.0.1, with the same ONNX Runtime
threads, max batch size and queue delay, and is driven by the same load generator (gRPC
where the system speaks it, HTTP for Ray Serve). The result is one report, one table.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgetier.bench._energy import EnergyProbe
from edgetier.bench._loadgen import RequestSender, Tensors
from edgetier.bench._meta import make_report, model_info
from edgetier.bench._progress import SweepProgress
from edgetier.bench._schema import BenchReport, BenchResult
from edgetier.bench._server_bench import ServerBenchConfig, measure_server
from edgetier.bench._stats import merge_repeats
from edgetier.bench._systems import (
    PEER_MODULES,
    ServerSettings,
    check_peer,
    default_peer_python,
    peer_versions,
    start_system,
)
from edgetier.errors import ConfigError, EdgeTierError

__all__ = ["SYSTEMS", "CompareConfig", "resolve_model", "run_compare"]

SYSTEMS = ("onnxruntime", "edgetier", "pytriton", "ray-serve")
_PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass
class CompareConfig:
    model: str
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    concurrency: list[int] = field(default_factory=lambda: [1, 8])
    protocols: list[str] = field(default_factory=lambda: ["grpc"])
    tensors: Tensors = "binary"
    duration_s: float = 5.0
    warmup_s: float = 1.0
    repeats: int = 1
    settings: ServerSettings = field(default_factory=ServerSettings)
    peer_python: Path | None = None
    model_cache: Path = Path("var/bench/models")
    energy: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ConfigError(f"systems must be among {', '.join(SYSTEMS)}, got {unknown}")
        if any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        too_big = [b for b in self.batch_sizes if b > self.settings.max_batch_size]
        if too_big:
            raise ConfigError(
                f"batch sizes {too_big} exceed max_batch_size {self.settings.max_batch_size}"
            )
        for p in self.protocols:
            if p not in ("grpc", "http"):
                raise ConfigError(f"protocols must be grpc or http, got {p!r}")


def resolve_model(spec: str, cache: Path) -> tuple[Path, str]:
    """An ONNX file, a repository model folder, or a demo model name -> (file, name)."""
    path = Path(spec)
    if path.is_file():
        name = path.parent.parent.name if path.parent.name.isdigit() else path.stem
        return path, name
    if path.is_dir():
        versions = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())
        if versions and (path / str(versions[-1]) / "model.onnx").is_file():
            return path / str(versions[-1]) / "model.onnx", path.name
        raise ConfigError(f"model folder {path} holds no <version>/model.onnx")
    from edgetier.runtime import build_demo_repository
    from edgetier.runtime._demo import DEMO_MODELS

    if spec not in DEMO_MODELS:
        raise ConfigError(
            f"model must be an ONNX file, a repository model folder or a demo model "
            f"({', '.join(DEMO_MODELS)}), got {spec!r}"
        )
    build_demo_repository(cache, models=[spec])
    return cache / spec / "1" / "model.onnx", spec


def _raw(cfg: CompareConfig, model: Path, threads: int) -> list[BenchResult]:
    """One round of raw ONNX Runtime over the batch sizes and concurrencies."""
    opts = {
        "model": str(model.resolve()),
        "intra_op_threads": threads,
        "inter_op_threads": cfg.settings.inter_op_threads,
        "intra_op_spinning": cfg.settings.intra_op_spinning,
        "duration_s": cfg.duration_s,
        "count": None,
        "warmup_s": cfg.warmup_s,
        "provider": cfg.settings.provider,
        "batch_sizes": cfg.batch_sizes,
        "concurrency": cfg.concurrency,
        "repeats": 1,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "edgetier.bench._raw_worker", json.dumps(opts)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise EdgeTierError(f"raw onnxruntime run failed: {proc.stderr.strip()[-800:]}")
    return [BenchResult.model_validate(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


async def _drive(
    cfg: CompareConfig,
    system: str,
    url: str,
    name: str,
    pid: int,
    probe: EnergyProbe,
    progress: SweepProgress,
    round_label: str,
) -> list[BenchResult]:
    """One round of one server system over the batch sizes and concurrencies."""
    results = []
    for b in cfg.batch_sizes:
        scfg = ServerBenchConfig(
            url=url,
            model=name,
            batch_size=b,
            concurrency=cfg.concurrency,
            tensors=cfg.tensors,
            duration_s=cfg.duration_s,
            warmup_s=cfg.warmup_s,
            repeats=1,
            server_pids=[pid],
            system=system,
            provider=_PROVIDER_NAMES[cfg.settings.provider],
            energy=False,
            progress=False,
        )
        slots = max(cfg.concurrency) if cfg.tensors == "shm" else 1
        sender = RequestSender(url, name, batch_size=b, tensors=cfg.tensors, slots=slots)
        await sender.open()
        try:
            for c in cfg.concurrency:
                progress.phase(f"{system} {sender.protocol} batch {b} c={c} {round_label}")
                results.append(await measure_server(scfg, sender, concurrency=c, probe=probe))
                progress.advance()
        finally:
            await sender.close()
    return results


def _round_order(systems: list[str], index: int) -> list[str]:
    """Systems in the order of round ``index``: forwards, then backwards, and so on, so a
    slow drift of the machine's speed favours no system."""
    return list(systems) if index % 2 == 0 else list(reversed(systems))


def _one_round(
    cfg: CompareConfig,
    system: str,
    model: Path,
    name: str,
    settings: ServerSettings,
    threads: int,
    tmp: Path,
    probe: EnergyProbe,
    progress: SweepProgress,
    peer_python: Path,
    label: str,
) -> list[BenchResult]:
    """Every point of one system once: raw in a worker process, a server started fresh."""
    per_system = len(cfg.batch_sizes) * len(cfg.concurrency)
    if system == "onnxruntime":
        progress.phase(f"raw onnxruntime {label}")
        rows = _raw(cfg, model, threads)
        for _ in range(per_system):
            progress.advance()
        return rows
    rows = []
    protocols = ["http"] if system == "ray-serve" else cfg.protocols
    progress.phase(f"starting {system} ({label})")
    with start_system(
        system, model, name, settings, tmp / system, peer_python=peer_python
    ) as running:
        for protocol in protocols:
            rows += asyncio.run(
                _drive(
                    cfg,
                    system,
                    running.url(protocol),
                    name,
                    running.proc.pid,
                    probe,
                    progress,
                    label,
                )
            )
    return rows


def run_compare(cfg: CompareConfig, *, command: str | None = None) -> BenchReport:
    """Measure every requested system in turn; one report of kind "compare"."""
    model, name = resolve_model(cfg.model, cfg.model_cache)
    threads = cfg.settings.intra_op_threads or (os.cpu_count() or 1)
    settings = ServerSettings(**{**cfg.settings.__dict__, "intra_op_threads": threads})
    peer_python = cfg.peer_python or default_peer_python()
    for system in cfg.systems:  # fail before measuring anything when a peer is missing
        if system in PEER_MODULES:
            check_peer(system, peer_python)
    notes = [
        f"every system: ONNX Runtime {settings.provider} provider, intra-op threads {threads}, "
        f"inter-op threads {settings.inter_op_threads}, intra-op spinning "
        f"{'on' if settings.intra_op_spinning else 'off'}, max batch size "
        f"{settings.max_batch_size}, dynamic batching "
        + (
            f"on, max queue delay {settings.max_queue_delay_us} us"
            if settings.dynamic_batching
            else "off"
        )
        + "; the client runs on the same machine",
    ]
    probe = EnergyProbe(enabled=cfg.energy)
    if probe.unavailable:
        notes.append(f"energy: {probe.unavailable}")
    elif probe.estimated:
        notes.append(f"energy: estimated ({probe.source}), not measured")
    per_server = len(cfg.batch_sizes) * len(cfg.concurrency) * cfg.repeats
    total = sum(
        per_server * (1 if s in ("onnxruntime", "ray-serve") else len(cfg.protocols))
        for s in cfg.systems
    )
    rounds: list[BenchResult] = []
    try:
        with (
            SweepProgress(total, title=f"bench compare {name}", enabled=cfg.progress) as progress,
            tempfile.TemporaryDirectory(prefix="edgetier-compare-") as tmp,
        ):
            for index in range(cfg.repeats):
                label = f"round {index + 1}/{cfg.repeats}"
                for system in _round_order(cfg.systems, index):
                    rounds += _one_round(
                        cfg,
                        system,
                        model,
                        name,
                        settings,
                        threads,
                        Path(tmp),
                        probe,
                        progress,
                        peer_python,
                        label,
                    )
    finally:
        probe.close()
    # rounds merged per point (medians, spread, each round's figures), systems in order
    groups: dict[tuple[str, str | None, int, int | None], list[BenchResult]] = {}
    for r in sorted(rounds, key=lambda r: cfg.systems.index(r.system)):
        groups.setdefault((r.system, r.protocol, r.batch_size, r.concurrency), []).append(r)
    results = [
        merge_repeats(group, label=f"{key[0]} {key[1] or ''} batch {key[2]} c={key[3]}")
        for key, group in groups.items()
    ]
    notes.append(
        f"{cfg.repeats} round(s): each round measures every system once, in alternating "
        "order; figures are medians over rounds"
    )
    report = make_report(
        "compare", results, model=model_info(model, name), command=command, notes=notes
    )
    report.versions.update(peer_versions(peer_python, cfg.systems))
    return report

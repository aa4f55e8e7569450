"""`edgetier bench compare`: one model on raw ONNX Runtime, EdgeTier, PyTriton and Ray Serve.

Each system runs in its own process on 127.0.0.1, with the same ONNX Runtime threads, max
batch size and queue delay, and is driven by the same load generator (gRPC where the system
speaks it, HTTP for Ray Serve). Those settings are the model's own, as the server would
serve it, unless options say otherwise (:mod:`edgetier.bench._served`); raw ONNX Runtime
loads the model through the server's engine, with the server's session options. Repeats
run as rounds. By default each round starts one system at a time and measures all its
points; with ``interleave`` every system stays up and the systems take turns point by point,
so a machine whose speed drifts over minutes favours none of them (idle servers still take
a little CPU from the one measured). The result is one report, one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgetier.bench._energy import EnergyProbe
from edgetier.bench._loadgen import RequestSender, Tensors
from edgetier.bench._meta import make_report, model_info
from edgetier.bench._progress import SweepProgress
from edgetier.bench._schema import BenchReport, BenchResult
from edgetier.bench._served import ServedModel, ServerSettings, served_model
from edgetier.bench._server_bench import ServerBenchConfig, measure_server
from edgetier.bench._stats import merge_repeats
from edgetier.bench._systems import (
    PEER_MODULES,
    check_peer,
    default_peer_python,
    peer_versions,
    start_system,
)
from edgetier.errors import ConfigError, EdgeTierError
from edgetier.runtime import PROVIDER_NAMES

__all__ = ["SYSTEMS", "CompareConfig", "run_compare"]

SYSTEMS = ("onnxruntime", "edgetier", "pytriton", "ray-serve")


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
    """Overrides; what it leaves None comes from the model's config (see _served)."""
    peer_python: Path | None = None
    model_cache: Path = Path("var/bench/models")
    energy: bool = True
    progress: bool = True
    interleave: bool = False

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ConfigError(f"systems must be among {', '.join(SYSTEMS)}, got {unknown}")
        if any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        for p in self.protocols:
            if p not in ("grpc", "http"):
                raise ConfigError(f"protocols must be grpc or http, got {p!r}")


def _check_batch_sizes(batch_sizes: list[int], served: ServedModel) -> None:
    limit = max(1, served.max_batch_size)
    too_big = [b for b in batch_sizes if b > limit]
    if too_big:
        raise ConfigError(
            f"batch sizes {too_big} exceed the max_batch_size {served.max_batch_size} "
            f"({served.sources['max_batch_size']}, {served.origin}); give --batch-sizes "
            f"up to {limit} or --max-batch-size"
        )


class _RawWorker:
    """Raw ONNX Runtime in a worker process that keeps its session between points."""

    def __init__(
        self, cfg: CompareConfig, served: ServedModel, workdir: Path, log: IO[str]
    ) -> None:
        opts = {
            "repository": str(served.write_repository(workdir).resolve()),
            "name": served.name,
            "duration_s": cfg.duration_s,
            "count": None,
            "warmup_s": cfg.warmup_s,
        }
        self._log = log
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "edgetier.bench._raw_worker", json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self.provider = json.loads(self._read())["provider"]  # the session is loaded

    def _read(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(30)
            self._log.flush()
            tail = Path(self._log.name).read_text(errors="replace").strip()[-800:]
            raise EdgeTierError(f"raw onnxruntime worker failed: {tail}")
        return line

    def measure(self, protocol: str | None, batch_size: int, concurrency: int) -> BenchResult:
        assert self._proc.stdin is not None
        point = {"batch_size": batch_size, "concurrency": concurrency}
        self._proc.stdin.write(json.dumps(point) + "\n")
        self._proc.stdin.flush()
        return BenchResult.model_validate_json(self._read())

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@dataclass
class _Server:
    """A running server system and how to measure one point on it."""

    cfg: CompareConfig
    system: str
    running: Any
    served: ServedModel
    probe: EnergyProbe

    def measure(self, protocol: str | None, batch_size: int, concurrency: int) -> BenchResult:
        assert protocol is not None
        cfg, name = self.cfg, self.served.name
        url = self.running.url(protocol)
        scfg = ServerBenchConfig(
            url=url,
            model=name,
            batch_size=batch_size,
            concurrency=[concurrency],
            tensors=cfg.tensors,
            duration_s=cfg.duration_s,
            warmup_s=cfg.warmup_s,
            server_pids=[self.running.proc.pid],
            system=self.system,
            # EdgeTier says in its model metadata; the peers are told which to use
            provider=None if self.system == "edgetier" else PROVIDER_NAMES[self.served.provider],
            energy=False,
            progress=False,
        )

        async def window() -> BenchResult:
            slots = concurrency if cfg.tensors == "shm" else 1
            sender = RequestSender(
                url, name, batch_size=batch_size, tensors=cfg.tensors, slots=slots
            )
            await sender.open()
            try:
                return await measure_server(scfg, sender, concurrency=concurrency, probe=self.probe)
            finally:
                await sender.close()

        return asyncio.run(window())


@dataclass
class _Run:
    """What every system of one compare run shares."""

    cfg: CompareConfig
    served: ServedModel
    workdir: Path
    peer_python: Path
    probe: EnergyProbe
    progress: SweepProgress

    @contextlib.contextmanager
    def open(self, system: str) -> Iterator[_RawWorker | _Server]:
        """Start a system: the raw worker, or a server on free ports."""
        self.progress.phase(f"starting {system}")
        if system == "onnxruntime":
            workdir = self.workdir / system
            workdir.mkdir(parents=True, exist_ok=True)
            with (workdir / "onnxruntime.log").open("w") as log:
                worker = _RawWorker(self.cfg, self.served, workdir / "repository", log)
                try:
                    yield worker
                finally:
                    worker.close()
            return
        with start_system(
            system, self.served, self.workdir / system, peer_python=self.peer_python
        ) as running:
            yield _Server(self.cfg, system, running, self.served, self.probe)

    def measure(
        self, handle: _RawWorker | _Server, system: str, batch: int, concurrency: int, label: str
    ) -> list[BenchResult]:
        rows = []
        for protocol in _protocols(self.cfg, system):
            what = f"{system} {protocol or ''} batch {batch} c={concurrency} {label}"
            self.progress.phase(" ".join(what.split()))
            rows.append(handle.measure(protocol, batch, concurrency))
            self.progress.advance()
        return rows


def _protocols(cfg: CompareConfig, system: str) -> list[str | None]:
    if system == "onnxruntime":
        return [None]
    return ["http"] if system == "ray-serve" else list(cfg.protocols)


def _round_order(systems: list[str], index: int) -> list[str]:
    """Systems in the order of round ``index``: forwards, then backwards, and so on, so a
    slow drift of the machine's speed favours no system."""
    return list(systems) if index % 2 == 0 else list(reversed(systems))


def _measure_rounds(run: _Run) -> list[BenchResult]:
    cfg = run.cfg
    points = [(b, c) for b in cfg.batch_sizes for c in cfg.concurrency]
    rows: list[BenchResult] = []
    if cfg.interleave:
        with contextlib.ExitStack() as stack:
            handles = {s: stack.enter_context(run.open(s)) for s in cfg.systems}
            for index in range(cfg.repeats):
                label = f"round {index + 1}/{cfg.repeats}"
                for b, c in points:
                    for system in _round_order(cfg.systems, index):
                        rows += run.measure(handles[system], system, b, c, label)
        return rows
    for index in range(cfg.repeats):
        label = f"round {index + 1}/{cfg.repeats}"
        for system in _round_order(cfg.systems, index):
            with run.open(system) as handle:
                for b, c in points:
                    rows += run.measure(handle, system, b, c, label)
    return rows


def run_compare(cfg: CompareConfig, *, command: str | None = None) -> BenchReport:
    """Measure every requested system in turn; one report of kind "compare"."""
    served = served_model(cfg.model, cfg.settings, cfg.model_cache)
    _check_batch_sizes(cfg.batch_sizes, served)
    peer_python = cfg.peer_python or default_peer_python()
    for system in cfg.systems:  # fail before measuring anything when a peer is missing
        if system in PEER_MODULES:
            check_peer(system, peer_python)
    notes = [served.describe()]
    if served.config.instance_count > 1:
        notes.append(
            f"the config runs {served.config.instance_count} instances; raw ONNX Runtime runs "
            "one, with the session options of the server's first instance"
        )
    probe = EnergyProbe(enabled=cfg.energy)
    if probe.unavailable:
        notes.append(f"energy: {probe.unavailable}")
    elif probe.estimated:
        notes.append(f"energy: estimated ({probe.source}), not measured")
    total = sum(
        len(cfg.batch_sizes) * len(cfg.concurrency) * cfg.repeats * len(_protocols(cfg, s))
        for s in cfg.systems
    )
    try:
        with (
            SweepProgress(
                total, title=f"bench compare {served.name}", enabled=cfg.progress
            ) as progress,
            tempfile.TemporaryDirectory(prefix="edgetier-compare-") as tmp,
        ):
            run = _Run(cfg, served, Path(tmp), peer_python, probe, progress)
            rounds = _measure_rounds(run)
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
        f"{cfg.repeats} round(s), "
        + (
            "interleaved: every system up at once, taking turns point by point"
            if cfg.interleave
            else "one system up at a time"
        )
        + ", in alternating order; figures are medians over rounds"
    )
    report = make_report(
        "compare",
        results,
        model=model_info(served.file, served.name),
        command=command,
        notes=notes,
        settings=served.settings(),
    )
    report.versions.update(peer_versions(peer_python, cfg.systems))
    return report

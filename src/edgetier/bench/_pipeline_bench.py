"""`edgetier bench pipeline`: aggregate and per-stream FPS, end-to-end latency, drops.

Runs a pipeline file with :mod:`edgetier.pipeline` for a fixed duration and reports it as
one result row of kind "pipeline". Where the pipeline package is not installed, it says so;
no figure is made up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetier.bench._energy import EnergyProbe
from edgetier.bench._meta import make_report
from edgetier.bench._sampling import ResourceSampler
from edgetier.bench._schema import BenchReport, BenchResult
from edgetier.bench._stats import latency_summary, merge_repeats
from edgetier.errors import ConfigError, UnsupportedError

__all__ = ["PipelineBenchConfig", "pipeline_result", "run_pipeline_bench"]


@dataclass
class PipelineBenchConfig:
    path: Path
    duration_s: float = 10.0
    repeats: int = 1
    energy: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.duration_s <= 0:
            raise ConfigError(f"duration_s must be > 0, got {self.duration_s}")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")


def pipeline_result(stats: dict[str, Any], wall_s: float, extra: dict[str, Any]) -> BenchResult:
    """One result row from the pipeline's per-stream stats (frames_out, dropped, latencies_s)."""
    if wall_s <= 0:
        raise ConfigError(f"wall_s must be > 0, got {wall_s}")
    per_stream = [s.frames_out / wall_s for s in stats.values()]
    latencies = np.concatenate(
        [np.fromiter(s.latencies_s, dtype=np.float64) for s in stats.values()] or [np.zeros(0)]
    )
    if latencies.size == 0:
        raise UnsupportedError("the pipeline delivered no frame: no latency to report")
    frames = sum(s.frames_out for s in stats.values())
    return BenchResult(
        system="edgetier-pipeline",
        provider=str(extra.pop("provider", "unknown")),
        batch_size=1,
        throughput_per_s=frames / wall_s,
        latency_ms=latency_summary((latencies * 1e9).astype(np.int64)),
        per_stream_fps=per_stream,
        drops=sum(s.dropped for s in stats.values()),
        requests=frames,
        errors=sum(s.errors for s in stats.values()),
        **extra,
    )


def run_pipeline_bench(cfg: PipelineBenchConfig, *, command: str | None = None) -> BenchReport:
    try:
        from edgetier.pipeline import Pipeline
    except ImportError as exc:
        raise UnsupportedError(
            f"the pipeline package is not available ({exc}); `edgetier bench pipeline` needs "
            "edgetier.pipeline: pip install 'edgetier[video]'"
        ) from exc
    if not cfg.path.is_file():
        raise ConfigError(f"pipeline file not found: {cfg.path}")
    probe = EnergyProbe(enabled=cfg.energy)
    notes = [f"energy: {probe.unavailable}"] if probe.unavailable else []
    repeats = []
    try:
        for _ in range(cfg.repeats):
            pipeline = Pipeline.from_file(cfg.path)
            sampler = ResourceSampler()
            sampler.start()
            probe.start()
            t0 = time.perf_counter()
            stats = asyncio.run(pipeline.run(duration_s=cfg.duration_s))
            wall_s = time.perf_counter() - t0
            reading = probe.stop()
            usage = sampler.stop()
            sampler.close()
            frames = sum(s.frames_out for s in stats.values())
            repeats.append(
                pipeline_result(
                    stats,
                    wall_s,
                    {
                        "cpu_percent": usage.cpu_percent,
                        "peak_memory_bytes": usage.peak_memory_bytes,
                        "gpu_util_percent": usage.gpu_util_percent,
                        "energy_j_per_inference": reading.per_inference(frames)
                        if reading
                        else None,
                        "energy_source": reading.source if reading else None,
                        "energy_estimated": reading.estimated if reading else False,
                    },
                )
            )
    finally:
        probe.close()
    result = merge_repeats(repeats, label=f"pipeline {cfg.path.name}")
    return make_report("pipeline", [result], model=None, command=command, notes=notes)

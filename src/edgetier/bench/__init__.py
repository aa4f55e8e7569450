"""The benchmark system: raw engine, server (closed and open loop), pipelines, peers.

from edgetier.bench import ModelBenchConfig, run_model_bench, write_outputs
report = run_model_bench(ModelBenchConfig(path=Path("model.onnx"), batch_sizes=[1, 8]))
write_outputs(report, Path("benchmarks/results/model"))
"""

from __future__ import annotations

from edgetier.bench._arrivals import poisson_arrivals
from edgetier.bench._compare import SYSTEMS, CompareConfig, run_compare
from edgetier.bench._docs import build_docs
from edgetier.bench._energy import EnergyProbe, EnergyReading
from edgetier.bench._engine_bench import ModelBenchConfig, run_model_bench
from edgetier.bench._loadgen import RequestSender, closed_loop, open_loop
from edgetier.bench._meta import make_report, model_info
from edgetier.bench._perf_analyzer import parse_perf_analyzer_csv, run_perf_analyzer
from edgetier.bench._pipeline_bench import PipelineBenchConfig, run_pipeline_bench
from edgetier.bench._report import render_markdown, render_plots, write_outputs
from edgetier.bench._sampling import ResourceSampler
from edgetier.bench._schema import SCHEMA, BenchReport, BenchResult, LatencyMs, ModelInfo
from edgetier.bench._served import ServedModel, ServerSettings, served_model
from edgetier.bench._server_bench import (
    ClientBottleneckWarning,
    ServerBenchConfig,
    measure_server,
    run_server_bench,
    server_provider,
)
from edgetier.bench._stats import SpreadWarning, latency_summary, merge_repeats, spread_pct
from edgetier.bench._systems import RunningSystem, start_system, stop_process, wait_ready

__all__ = [
    "SCHEMA",
    "SYSTEMS",
    "BenchReport",
    "BenchResult",
    "ClientBottleneckWarning",
    "CompareConfig",
    "EnergyProbe",
    "EnergyReading",
    "LatencyMs",
    "ModelBenchConfig",
    "ModelInfo",
    "PipelineBenchConfig",
    "RequestSender",
    "ResourceSampler",
    "RunningSystem",
    "ServedModel",
    "ServerBenchConfig",
    "ServerSettings",
    "SpreadWarning",
    "build_docs",
    "closed_loop",
    "latency_summary",
    "make_report",
    "measure_server",
    "merge_repeats",
    "model_info",
    "open_loop",
    "parse_perf_analyzer_csv",
    "poisson_arrivals",
    "render_markdown",
    "render_plots",
    "run_compare",
    "run_model_bench",
    "run_perf_analyzer",
    "run_pipeline_bench",
    "run_server_bench",
    "served_model",
    "server_provider",
    "spread_pct",
    "start_system",
    "stop_process",
    "wait_ready",
    "write_outputs",
]

"""The agent's per-workload health: figures read from the inference server's own metrics
(requests, failures, the duration histogram's p99), judged by the assignment's limits
into the workload's and the node's Degraded condition."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgetier.agent._health import parse_server_metrics, quantile
from edgetier.agent._workloads import WorkloadStatus, node_degraded
from edgetier.control import Assignment, HealthLimits, ModelVersionInfo, WorkloadHealth
from edgetier.server._stats import DURATION_BUCKETS_US, VersionStats


def test_quantile_interpolates_within_its_bucket_as_prometheus_does() -> None:
    buckets = [(100.0, 50.0), (200.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(100.0)
    assert quantile(0.99, buckets) == pytest.approx(198.0)
    assert quantile(0.99, [(100.0, 0.0), (float("inf"), 0.0)]) is None
    # beyond the highest finite bound: that bound
    assert quantile(0.99, [(100.0, 1.0), (float("inf"), 10.0)]) == 100.0


def _server_text(stats: VersionStats) -> str:
    """The server's metrics for one version, rendered by its own collector."""
    from prometheus_client import CollectorRegistry, generate_latest

    from edgetier.server._metrics import ModelCollector, render_counters

    batcher_stats = SimpleNamespace(
        batch_histogram={},
        queue_wait_histogram=[0] * (len(DURATION_BUCKETS_US) + 1),
        queue_ns=0,
        execution_count=0,
    )
    version = SimpleNamespace(
        name="detector",
        version_str="2",
        stats=stats,
        batcher=SimpleNamespace(queue_depth=0, stats=batcher_stats),
    )
    manager: Any = SimpleNamespace(loaded=lambda: [version])
    registry = CollectorRegistry()
    registry.register(ModelCollector(manager))
    return render_counters(manager).decode() + generate_latest(registry).decode()


def test_the_servers_own_metrics_give_requests_errors_and_p99() -> None:
    stats = VersionStats()
    for _ in range(95):
        stats.record_success(1, 2_000_000, 0, 0)  # 2 ms
    for _ in range(5):
        stats.record_failure(40_000_000)  # 40 ms
    figures = parse_server_metrics(_server_text(stats))
    health = figures[("detector", "2")]
    assert (health.requests, health.errors) == (100, 5)
    assert health.latency_p99_ms is not None
    assert 25.0 < health.latency_p99_ms <= 50.0  # within the bucket that holds the slow five


def _status(limits: HealthLimits | None) -> WorkloadStatus:
    info = ModelVersionInfo(model="detector", version=2, digest="sha256:" + "0" * 64, size_bytes=1)
    assignment = Assignment(
        deployment="det", generation=3, kind="model", model=info, revision="abc", limits=limits
    )
    return WorkloadStatus(assignment, record=lambda *_: None)


@pytest.mark.parametrize(
    ("health", "reason"),
    [
        (WorkloadHealth(requests=100, errors=10, latency_p99_ms=1), "ErrorRate"),
        (WorkloadHealth(requests=100, errors=0, latency_p99_ms=120), "Latency"),
        (WorkloadHealth(requests=100, errors=1, latency_p99_ms=50), None),
        (WorkloadHealth(requests=3, errors=3, latency_p99_ms=900), None),  # too few to tell
    ],
)
def test_figures_are_judged_by_the_assignments_limits(
    health: WorkloadHealth, reason: str | None
) -> None:
    status = _status(HealthLimits(max_error_rate=0.05, min_requests=10, latency_p99_ms=100))
    status.judge(health)
    state = status.state()
    assert state.health == health and state.revision == "abc"
    node = node_degraded([status])
    if reason is None:
        assert node is None
        return
    assert node is not None and node.reason == reason and "workload det" in node.message


def test_a_degraded_workload_recovers_when_its_figures_do() -> None:
    status = _status(HealthLimits(max_error_rate=0.05, min_requests=10))
    status.judge(WorkloadHealth(requests=20, errors=10))
    assert node_degraded([status]) is not None
    status.judge(WorkloadHealth(requests=400, errors=10))
    assert node_degraded([status]) is None


def test_a_load_failure_is_degraded_load_failed_and_figures_do_not_clear_it() -> None:
    status = _status(HealthLimits())
    status.degrade("LoadFailed", "detector version 2 is not ready after its load")
    status.judge(WorkloadHealth(requests=100, errors=0))
    node = node_degraded([status])
    assert node is not None and node.reason == "LoadFailed" and "not ready" in node.message
    unreachable = _status(None)
    unreachable.degrade("ControllerUnreachable", "download: connection refused")
    assert node_degraded([unreachable]) is None  # says nothing of the version


async def test_a_pipelines_prometheus_sink_gives_frames_drops_and_p99() -> None:
    import time

    import httpx

    from edgetier.agent._health import parse_pipeline_metrics
    from edgetier.pipeline.sinks import PrometheusSink, SinkContext
    from edgetier.pipeline.sinks._prometheus import Prometheus

    streams = {"cam-0": SimpleNamespace(fps=10.0, frames_out=95, dropped=5)}
    ctx = SinkContext(
        node="edge-1",
        pipeline="traffic",
        stream_ids=["cam-0"],
        state_dir=Path("."),
        base_dir=Path("."),
        stats=lambda: streams,
    )
    sink = Prometheus(PrometheusSink(kind="prometheus", port=0), ctx)
    await sink.start()
    try:
        for delay_s in [0.03] * 99 + [0.4]:
            meta = SimpleNamespace(stream_id="cam-0", capture_ts_s=time.time() - delay_s)
            await sink.frame(SimpleNamespace(meta=meta))  # type: ignore[arg-type]
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{sink.port}/metrics")).text
    finally:
        await sink.stop()
    health = parse_pipeline_metrics(text)
    assert health is not None and (health.requests, health.errors) == (100, 5)
    assert health.latency_p99_ms is not None and 20.0 < health.latency_p99_ms <= 50.0
    assert parse_pipeline_metrics("") is None

"""Prometheus metrics with Triton's names, read from the counters at scrape time.

Nothing is counted on the hot path for Prometheus: the loaded model versions are walked
when scraped. Counters keep Triton's exact names: prometheus_client would add ``_total``
to them, so they are rendered here; gauges, histograms and extra collectors go through
prometheus_client.
Extra collectors (GPU/CPU telemetry from edgetier.hardware) register beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edgetier.batching import BatcherStats
from edgetier.server._manager import ModelManager, ModelVersion
from edgetier.server._stats import DURATION_BUCKETS_US

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# name, help, value of a version
_COUNTERS: tuple[tuple[str, str, Callable[[ModelVersion], int]], ...] = (
    (
        "nv_inference_request_success",
        "Number of successful inference requests",
        lambda v: v.stats.success_count,
    ),
    (
        "nv_inference_request_failure",
        "Number of failed inference requests",
        lambda v: v.stats.fail_count,
    ),
    (
        "nv_inference_count",
        "Number of inferences performed (batch rows)",
        lambda v: v.stats.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed (batches)",
        lambda v: v.batcher.stats.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds",
        lambda v: (v.stats.success_ns + v.stats.fail_ns) // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds",
        lambda v: v.stats.queue_ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds",
        lambda v: v.stats.compute_infer_ns // 1000,
    ),
)


class ModelCollector(Collector):
    """Per model-version metrics for every loaded version."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        versions = self._manager.loaded()
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Requests waiting in the model's queue (queue depth)",
            labels=["model", "version"],
        )
        for v in versions:
            pending.add_metric([v.name, v.version_str], v.batcher.queue_depth)
        yield pending
        hist = HistogramMetricFamily(
            "edgetier_batch_size",
            "Sizes of the batches the model executed",
            labels=["model", "version"],
        )
        for v in versions:
            sizes = v.batcher.stats.batch_histogram
            buckets: list[tuple[str, float]] = []
            for bound in _BATCH_BUCKETS:
                buckets.append((str(bound), sum(c for s, c in sizes.items() if s <= bound)))
            buckets.append(("+Inf", sum(sizes.values())))
            hist.add_metric(
                [v.name, v.version_str], buckets, sum_value=sum(s * c for s, c in sizes.items())
            )
        yield hist
        waits = HistogramMetricFamily(
            "edgetier_queue_wait_us",
            "Time successful requests waited in the queue before their batch started (us)",
            labels=["model", "version"],
        )
        for v in versions:
            stats = v.batcher.stats
            total = 0
            buckets = []
            for bound, count in zip(
                BatcherStats.QUEUE_WAIT_BUCKETS_US, stats.queue_wait_histogram, strict=False
            ):
                total += count
                buckets.append((str(bound), total))
            buckets.append(("+Inf", sum(stats.queue_wait_histogram)))
            waits.add_metric([v.name, v.version_str], buckets, sum_value=stats.queue_ns // 1000)
        yield waits
        durations = HistogramMetricFamily(
            "edgetier_request_duration_us",
            "Time requests spent in the server, answered or failed (us); the node agent "
            "takes a version's p99 from it",
            labels=["model", "version"],
        )
        for v in versions:
            total, buckets = 0, []
            for bound, count in zip(DURATION_BUCKETS_US, v.stats.duration_histogram, strict=False):
                total += count
                buckets.append((str(bound), total))
            buckets.append(("+Inf", sum(v.stats.duration_histogram)))
            spent_us = (v.stats.success_ns + v.stats.fail_ns) // 1000
            durations.add_metric([v.name, v.version_str], buckets, sum_value=spent_us)
        yield durations


def render_counters(manager: ModelManager) -> bytes:
    """Triton's counters in the Prometheus text format, with Triton's exact names."""
    versions = manager.loaded()
    lines: list[str] = []
    for name, doc, value in _COUNTERS:
        lines.append(f"# HELP {name} {doc}\n# TYPE {name} counter\n")
        for v in versions:
            model = v.name.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{name}{{model="{model}",version="{v.version_str}"}} {value(v)}\n')
    return "".join(lines).encode()


_number: Callable[[float], str] = floatToGoString  # Prometheus' float text ("+Inf", "1e+06")


class _OneMetric(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_registry(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format, counters under their own names.

    prometheus_client renders a counter family as ``<name>_total``; Triton's counters from
    the collectors (``nv_energy_consumption`` of the GPU telemetry) have none, so a counter
    whose samples carry the family's own name is written as Triton writes it.
    """
    parts: list[bytes] = []
    for metric in registry.collect():
        if metric.type != "counter" or any(s.name != metric.name for s in metric.samples):
            parts.append(generate_latest(_OneMetric(metric)))
            continue
        doc = metric.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        lines = [f"# HELP {metric.name} {doc}\n# TYPE {metric.name} counter\n"]
        for sample in metric.samples:
            labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(sample.labels.items()))
            lines.append(
                f"{metric.name}{{{labels}}} {_number(sample.value)}\n"
                if labels
                else f"{metric.name} {_number(sample.value)}\n"
            )
        parts.append("".join(lines).encode())
    return b"".join(parts)


def build_registry(manager: ModelManager, extra: Iterable[Any] = ()) -> CollectorRegistry:
    """A registry with the model metrics and any extra collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelCollector(manager))
    for collector in extra:
        registry.register(collector)
    return registry


class MetricsApp:
    """ASGI app answering every GET with the registry's text exposition."""

    def __init__(self, manager: ModelManager, registry: CollectorRegistry) -> None:
        self.manager = manager
        self.registry = registry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].rstrip("/") not in ("", "/metrics"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"see /metrics"})
            return
        body = render_counters(self.manager) + render_registry(self.registry)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

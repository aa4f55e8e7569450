"""A node's per-workload health figures, from its own inference server's metrics and its
pipelines' Prometheus sinks.

The server counts, per model version since it was loaded, the requests it answered
(``nv_inference_request_success``), those that failed (``nv_inference_request_failure``)
and how long each took (the ``edgetier_request_duration_us`` histogram). A pipeline with
a ``prometheus`` sink counts its frames, the frames it dropped and each frame's latency
from capture to sink (``edgetier_pipeline_frames``, ``edgetier_pipeline_dropped_frames``,
``edgetier_pipeline_latency_seconds``); there a dropped frame is the failed request. The
agent reads them at each heartbeat and reports them with the workload, so that the
controller's rollout gates see a new version's error rate and p99 latency on each node::

    figures = parse_server_metrics(text)
    figures[("detector", "2")]        # WorkloadHealth(requests=120, errors=1, latency_p99_ms=8.4)
    parse_pipeline_metrics(text)      # WorkloadHealth(requests=900, errors=0, latency_p99_ms=41)
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from edgetier.control import WorkloadHealth

__all__ = ["parse_pipeline_metrics", "parse_server_metrics", "quantile"]

_SUCCESS = "nv_inference_request_success"
_FAILURE = "nv_inference_request_failure"
_DURATION = "edgetier_request_duration_us"
_FRAMES = "edgetier_pipeline_frames"
_DROPPED = "edgetier_pipeline_dropped_frames"
_LATENCY = "edgetier_pipeline_latency_seconds"


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram (``(upper bound, count up to it)``,
    ending with ``+Inf``), interpolated within its bucket as Prometheus'
    ``histogram_quantile`` does; None when it counted nothing. A quantile in the ``+Inf``
    bucket is the highest finite bound."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def parse_server_metrics(text: str) -> dict[tuple[str, str], WorkloadHealth]:
    """``{(model, version): figures}`` from the server's Prometheus text."""
    success: dict[tuple[str, str], float] = {}
    failure: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.labels.get("model", ""), sample.labels.get("version", ""))
            if sample.name in (_SUCCESS, _SUCCESS + "_total"):
                success[key] = sample.value
            elif sample.name in (_FAILURE, _FAILURE + "_total"):
                failure[key] = sample.value
            elif sample.name == _DURATION + "_bucket":
                bound = float(sample.labels["le"])
                buckets.setdefault(key, []).append((bound, sample.value))
    figures = {}
    for key in success.keys() | failure.keys():
        ok, failed = int(success.get(key, 0)), int(failure.get(key, 0))
        p99_us = quantile(0.99, buckets.get(key, []))
        figures[key] = WorkloadHealth(
            requests=ok + failed,
            errors=failed,
            latency_p99_ms=None if p99_us is None else p99_us / 1000.0,
        )
    return figures


def parse_pipeline_metrics(text: str) -> WorkloadHealth | None:
    """One pipeline's figures from its Prometheus sink, summed over its streams: frames
    through it and dropped (requests, errors) and the p99 of their latency; None when it
    has counted no frame yet."""
    frames = dropped = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (_FRAMES, _FRAMES + "_total"):
                frames += sample.value
            elif sample.name in (_DROPPED, _DROPPED + "_total"):
                dropped += sample.value
            elif sample.name == _LATENCY + "_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    if frames + dropped <= 0:
        return None
    p99_s = quantile(0.99, list(buckets.items()))
    return WorkloadHealth(
        requests=int(frames + dropped),
        errors=int(dropped),
        latency_p99_ms=None if p99_s is None else p99_s * 1000.0,
    )

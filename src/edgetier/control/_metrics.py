"""The controller's own Prometheus metrics (``GET /metrics``).

Requests by route template (``/v1/nodes/{node}/heartbeat``, never the node's name, so the
series stay few on a large fleet), method and status, with latency; nodes by condition and
deployments satisfied or not, read from the database when scraped; records ingested and
duplicates; reconcile passes; long polls parked::

    edgetier_controller_requests_total{route="/v1/nodes/{node}/heartbeat",method="POST",code="200"}
    edgetier_controller_nodes{condition="Offline"} 1
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edgetier.control._service import ControlService

__all__ = ["ControllerMetrics", "MetricsMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)


class _FleetCollector(Collector):
    def __init__(self, service: ControlService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        counts = self.service.counts()
        nodes = GaugeMetricFamily(
            "edgetier_controller_nodes",
            "Enrolled nodes with the condition True (condition=all: every node)",
            labels=["condition"],
        )
        nodes.add_metric(["all"], counts["nodes"])
        for kind, value in counts["nodes_by_condition"].items():
            nodes.add_metric([kind], value)
        nodes.add_metric(["Unschedulable"], counts["nodes_unschedulable"])
        yield nodes
        deployments = GaugeMetricFamily(
            "edgetier_controller_deployments",
            "Deployments whose every replica or stream is placed (state=satisfied) or not",
            labels=["state"],
        )
        deployments.add_metric(["satisfied"], counts["deployments_satisfied"])
        deployments.add_metric(["unsatisfied"], counts["deployments_unsatisfied"])
        yield deployments
        rollouts = GaugeMetricFamily(
            "edgetier_controller_rollouts",
            "Deployments by the state of their newest rollout",
            labels=["state"],
        )
        for state, value in counts["rollouts_by_state"].items():
            rollouts.add_metric([state], value)
        yield rollouts
        yield GaugeMetricFamily(
            "edgetier_controller_long_polls",
            "Desired-state long polls parked now",
            value=self.service.notifier.waiting,
        )
        yield GaugeMetricFamily(
            "edgetier_controller_leader",
            "1 while this replica runs the background passes (always on SQLite)",
            value=1 if self.service.is_leader else 0,
        )
        notices = self.service.notices
        if notices is not None:  # --mqtt: alert on this rather than on the log line
            yield GaugeMetricFamily(
                "edgetier_controller_notice_broker_up",
                "1 while the MQTT broker of change notices is connected, else 0",
                value=1.0 if notices.connected else 0.0,
            )


class ControllerMetrics:
    def __init__(self, service: ControlService) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgetier_controller_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgetier_controller_request_duration_seconds",
            "HTTP request latency by route template (long polls included: see route)",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.records_ingested = Counter(
            "edgetier_controller_records_ingested",
            "Node records (events and telemetry samples) stored",
            registry=self.registry,
        )
        self.records_duplicate = Counter(
            "edgetier_controller_records_duplicate",
            "Node records received again and ignored (at-least-once delivery)",
            registry=self.registry,
        )
        self.reconcile_passes = Counter(
            "edgetier_controller_reconcile_passes",
            "Reconcile passes of the loop",
            registry=self.registry,
        )
        self.registry.register(_FleetCollector(service))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by the route it matched (pure ASGI: no
    per-request task, no body buffering)."""

    def __init__(self, app: App, metrics: ControllerMetrics, routes: list[Any]) -> None:
        self.app = app
        self.metrics = metrics
        # plain Starlette routes (/openapi.json, /docs) name their endpoint, not themselves
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            template = getattr(scope.get("route"), "path", None) or self._template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(template, method, str(status["code"])).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - start)

    def _template(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        for route in self._routes:
            if endpoint is not None and getattr(route, "endpoint", None) is endpoint:
                return str(route.path)
        return "(unmatched)"

"""Fixtures of the controller's unit tests: a service on a temporary data dir with a
clock the test moves, its API over httpx's ASGI transport (no server, no thread), and a
small placement policy so that these tests do not depend on the default policy's figures.

Every test of a service runs twice: on SQLite and on PostgreSQL (a database of its own in
the session's cluster; ``database_url`` of ``edgetier.testing.fixtures``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
from onnx import TensorProto, helper

from edgetier.control import (
    Binding,
    ControllerSettings,
    ControlService,
    Deployment,
    ModelVersionInfo,
    Node,
    NodeReport,
    Placement,
    PlacementPolicy,
    create_app,
)


class SpreadPolicy(PlacementPolicy):
    """Offline, drained, throttled and out-of-tier nodes are rejected; the rest ranked by
    how few deployments they hold; one replica per node; streams split evenly."""

    def filter(
        self, deployment: Deployment, node: Node, model: ModelVersionInfo | None
    ) -> NodeReport:
        report = NodeReport(node.name)
        conditions = {c.type for c in node.status.conditions if c.status == "True"}
        if "Offline" in conditions:
            report.rejected.append("offline: no heartbeat")
        if "Throttled" in conditions:
            report.rejected.append("thermal: throttled")
        if node.spec.unschedulable:
            report.rejected.append("unschedulable: drained")
        tiers = deployment.spec.selector.tiers
        if tiers and node.spec.tier not in tiers:
            report.rejected.append(f"tier: {node.spec.tier} is not one of {', '.join(tiers)}")
        return report

    def score(
        self, deployment: Deployment, node: Node, model: ModelVersionInfo | None, report: NodeReport
    ) -> float:
        return 1.0 / (1 + len(node.status.placements))

    def bind(
        self,
        deployment: Deployment,
        ranked: list[tuple[Node, NodeReport]],
        model: ModelVersionInfo | None,
    ) -> Binding:
        wanted = deployment.spec.replicas
        chosen = ranked[:wanted]
        streams = deployment.spec.streams
        placements = [
            Placement(
                node=node.name,
                replica=i,
                streams=streams // len(chosen) + (1 if i < streams % len(chosen) else 0),
                reason="fewest deployments",
            )
            for i, (node, _) in enumerate(chosen)
        ]
        satisfied = len(placements) == wanted
        return Binding(
            placements, satisfied, "" if satisfied else f"{len(placements)} of {wanted} placed"
        )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def tiny_onnx(path: Path, *, scale: float = 2.0) -> Path:
    """A one-node ONNX model (y = x * scale) of a few hundred bytes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [scale] * 4)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "tiny", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, clock: Clock, database_url: str | None) -> Iterator[ControlService]:
    settings = ControllerSettings(
        data_dir=tmp_path / "controller", node_timeout_s=15, database_url=database_url
    )
    svc = ControlService(settings, clock=clock, policy=SpreadPolicy())
    svc.start()
    yield svc
    svc.close()


class Api:
    """The API in process, with the operator token and helpers for the common steps."""

    def __init__(self, client: httpx.AsyncClient, service: ControlService) -> None:
        self.http = client
        self.service = service
        self.operator = {"Authorization": f"Bearer {service.operator_token}"}

    async def enrol_token(self, **body: Any) -> str:
        answer = await self.http.post(
            "/v1/tokens", json={"kind": "enrol", **body}, headers=self.operator
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["token"])

    async def enrol(
        self, name: str, tier: str = "edge", profile: str = "jetson-xavier-nx"
    ) -> dict[str, str]:
        token = await self.enrol_token()
        answer = await self.http.post(
            "/v1/enrol", json={"token": token, "name": name, "tier": tier, "profile": profile}
        )
        assert answer.status_code == 201, answer.text
        return {"Authorization": f"Bearer {answer.json()['credential']}"}

    async def push(
        self, tmp: Path, name: str = "detector", *, scale: float = 2.0
    ) -> dict[str, Any]:
        path = tiny_onnx(tmp / f"{name}-{scale}.onnx", scale=scale)
        answer = await self.http.post(
            f"/v1/models/{name}/versions",
            files={"file": ("model.onnx", path.read_bytes())},
            headers=self.operator,
        )
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json())

    async def apply(self, name: str, spec: dict[str, Any], **metadata: Any) -> httpx.Response:
        body = {
            "apiVersion": "edgetier/v1",
            "kind": "Deployment",
            "metadata": {"name": name, **metadata},
            "spec": spec,
        }
        return await self.http.put(f"/v1/deployments/{name}", json=body, headers=self.operator)

    async def desired(self, node: str, headers: dict[str, str]) -> dict[str, Any]:
        answer = await self.http.get(f"/v1/nodes/{node}/desired", headers=headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture
async def api(service: ControlService) -> AsyncIterator[Api]:
    import asyncio

    service.notifier.bind(asyncio.get_running_loop())
    transport = httpx.ASGITransport(app=create_app(service, run_loop=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://controller") as client:
        yield Api(client, service)

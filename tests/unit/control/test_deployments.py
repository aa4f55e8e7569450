"""Deployments: apply with generations, bad bodies with field paths, placements written
into nodes' desired states, and re-placement on drain, heartbeat loss and throttling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import Api, Clock, SpreadPolicy

from edgetier.control import ControlService, Heartbeat


async def _placed(api: Api, name: str) -> list[str]:
    shown = (await api.http.get(f"/v1/deployments/{name}", headers=api.operator)).json()
    return sorted(p["node"] for p in shown["status"]["placements"])


async def _desired_deployments(api: Api, node: str) -> list[str]:
    return sorted(
        a["deployment"] for a in api.service.desired(node).model_dump(mode="json")["assignments"]
    )


async def test_apply_creates_then_bumps_the_generation_only_on_change(
    api: Api, tmp_path: Path
) -> None:
    await api.enrol("edge-1")
    await api.push(tmp_path)
    spec: dict[str, Any] = {"model": {"name": "detector"}, "selector": {"tiers": ["edge"]}}
    created = await api.apply("m", spec)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["metadata"]["generation"] == 1
    assert body["status"]["observedGeneration"] == 1
    assert [p["node"] for p in body["status"]["placements"]] == ["edge-1"]
    placed = {c["type"]: c for c in body["status"]["conditions"]}
    assert placed["Placed"]["status"] == "True"
    same = await api.apply("m", spec)
    assert same.status_code == 200 and same.json()["metadata"]["generation"] == 1
    changed = await api.apply("m", {**spec, "latency_target_ms": 50})
    assert changed.json()["metadata"]["generation"] == 2
    assert changed.json()["status"]["observedGeneration"] == 2
    events = (
        await api.http.get("/v1/events", params={"kind": "DeploymentApplied"}, headers=api.operator)
    ).json()
    assert [e["data"]["generation"] for e in events] == [1, 2]


async def test_a_bad_deployment_body_names_every_field_path(api: Api) -> None:
    body = {
        "apiVersion": "edgetier/v1",
        "kind": "Deployment",
        "metadata": {"name": "m"},
        "spec": {
            "model": {"name": "detector"},
            "replicas": 0,
            "selector": {"tiers": ["moon"]},
            "colour": "red",
        },
    }
    answer = await api.http.put("/v1/deployments/m", json=body, headers=api.operator)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert "3 errors in the deployment" in error
    assert "spec.replicas: must be >= 1, got 0" in error
    assert "spec.selector.tiers[0]: must be one of" in error
    assert "spec.colour: unknown field" in error
    both = {**body, "spec": {"model": {"name": "a"}, "pipeline": {"name": "b"}}}
    answer = await api.http.put("/v1/deployments/m", json=both, headers=api.operator)
    assert "spec.model: give exactly one of model and pipeline, got both" in answer.json()["error"]
    other = {**body, "metadata": {"name": "n"}, "spec": {"model": {"name": "a"}}}
    answer = await api.http.put("/v1/deployments/m", json=other, headers=api.operator)
    assert "metadata.name: 'n' differs from the name in the path 'm'" in answer.json()["error"]
    unknown = await api.apply("m", {"model": {"name": "nothing"}})
    assert unknown.status_code == 422
    assert "spec.model: no version of 'nothing' has been pushed" in unknown.json()["error"]
    broken = await api.http.put(
        "/v1/deployments/m",
        content=b"{not json",
        headers={**api.operator, "content-type": "application/json"},
    )
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["error"]


async def test_drain_moves_the_deployment_and_uncordon_lets_nodes_back(
    api: Api, tmp_path: Path
) -> None:
    one = await api.enrol("edge-1")
    await api.enrol("edge-2")
    await api.push(tmp_path)
    await api.apply("m", {"model": {"name": "detector"}})
    first = (await _placed(api, "m"))[0]
    second = "edge-2" if first == "edge-1" else "edge-1"
    before = api.service.desired(first).generation
    drained = await api.http.post(f"/v1/nodes/{first}/drain", headers=api.operator)
    assert drained.status_code == 200 and drained.json()["spec"]["unschedulable"] is True
    assert await _placed(api, "m") == [second]
    assert await _desired_deployments(api, first) == []
    assert api.service.desired(first).generation == before + 1
    assert await _desired_deployments(api, second) == ["m"]
    explain = (await api.http.get("/v1/deployments/m/explain", headers=api.operator)).json()
    rejected = {n["node"]: n["rejected"] for n in explain["nodes"]}
    assert rejected[first] == ["unschedulable: drained"]
    assert f"replica 0 on {second}" in explain["explanation"]
    # uncordoning does not move a satisfied deployment back (no churn)
    await api.http.post(f"/v1/nodes/{first}/uncordon", headers=api.operator)
    assert await _placed(api, "m") == [second]
    del one


async def test_a_lost_node_goes_offline_and_its_deployment_moves(
    api: Api, clock: Clock, tmp_path: Path
) -> None:
    one = await api.enrol("edge-1")
    two = await api.enrol("edge-2")
    await api.push(tmp_path)
    await api.apply("m", {"model": {"name": "detector"}})
    first = (await _placed(api, "m"))[0]
    survivor, survivor_headers = ("edge-2", two) if first == "edge-1" else ("edge-1", one)
    clock.advance(10)
    await api.http.post(f"/v1/nodes/{survivor}/heartbeat", json={}, headers=survivor_headers)
    clock.advance(10)  # first: 20 s without a heartbeat; survivor: 10 s
    assert api.service.check_timeouts() == [first]
    assert api.service.check_timeouts() == []  # level-triggered: nothing new
    assert await _placed(api, "m") == [survivor]
    node = (await api.http.get(f"/v1/nodes/{first}", headers=api.operator)).json()
    conditions = {c["type"]: (c["status"], c["reason"]) for c in node["status"]["conditions"]}
    assert conditions["Offline"] == ("True", "NoHeartbeat")
    kinds = [
        e["kind"]
        for e in (
            await api.http.get("/v1/events", params={"source": "controller"}, headers=api.operator)
        ).json()
    ]
    assert kinds.index("NodeOffline") < len(kinds) - kinds[::-1].index("DeploymentPlaced") - 1
    metrics = (await api.http.get("/metrics")).text
    assert 'edgetier_controller_nodes{condition="Offline"} 1.0' in metrics
    # the node comes back: Offline False again, the deployment stays where it is
    await api.http.post(
        f"/v1/nodes/{first}/heartbeat", json={}, headers=one if first == "edge-1" else two
    )
    node = (await api.http.get(f"/v1/nodes/{first}", headers=api.operator)).json()
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Offline"] == "False"


async def test_a_throttled_node_hands_its_deployment_over(api: Api, tmp_path: Path) -> None:
    one = await api.enrol("edge-1")
    two = await api.enrol("edge-2")
    await api.push(tmp_path)
    await api.apply("m", {"model": {"name": "detector"}})
    first = (await _placed(api, "m"))[0]
    headers = one if first == "edge-1" else two
    hot = {
        "conditions": [
            {"type": "Throttled", "status": "True", "reason": "Thermal", "message": "83 C"}
        ]
    }
    await api.http.post(f"/v1/nodes/{first}/heartbeat", json=hot, headers=headers)
    pending = api.service.pending.take()
    assert pending == {"m"}
    api.service.reconcile(pending)
    assert await _placed(api, "m") != [first]


async def test_unsatisfied_until_a_node_comes_then_placed(api: Api, tmp_path: Path) -> None:
    await api.push(tmp_path)
    applied = await api.apply("m", {"model": {"name": "detector"}, "replicas": 2})
    status = applied.json()["status"]
    assert status["placements"] == []
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Placed"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "True"
    await api.enrol("edge-1")
    assert await _placed(api, "m") == ["edge-1"]
    await api.enrol("edge-2")
    assert await _placed(api, "m") == ["edge-1", "edge-2"]
    metrics = (await api.http.get("/metrics")).text
    assert 'edgetier_controller_deployments{state="satisfied"} 1.0' in metrics


async def test_delete_empties_the_nodes_desired_state(api: Api, tmp_path: Path) -> None:
    await api.enrol("edge-1")
    await api.push(tmp_path)
    await api.apply("m", {"model": {"name": "detector"}})
    assert await _desired_deployments(api, "edge-1") == ["m"]
    answer = await api.http.delete("/v1/deployments/m", headers=api.operator)
    assert answer.status_code == 200
    assert await _desired_deployments(api, "edge-1") == []
    assert (await api.http.get("/v1/deployments/m", headers=api.operator)).status_code == 404
    assert (await api.http.delete("/v1/deployments/m", headers=api.operator)).status_code == 404


async def test_ready_comes_from_what_the_nodes_report(api: Api, tmp_path: Path) -> None:
    node = await api.enrol("edge-1")
    await api.push(tmp_path)
    await api.apply("m", {"model": {"name": "detector"}})
    running = {
        "workloads": [{"deployment": "m", "generation": 1, "phase": "Running"}],
        "desired_generation": 1,
    }
    await api.http.post("/v1/nodes/edge-1/heartbeat", json=running, headers=node)
    shown = (await api.http.get("/v1/deployments/m", headers=api.operator)).json()
    conditions = {c["type"]: c["status"] for c in shown["status"]["conditions"]}
    assert conditions == {
        "Placed": "True",
        "Ready": "True",
        "Progressing": "False",
        "Degraded": "False",
    }
    failed = {"workloads": [{"deployment": "m", "generation": 1, "phase": "Failed"}]}
    await api.http.post("/v1/nodes/edge-1/heartbeat", json=failed, headers=node)
    shown = (await api.http.get("/v1/deployments", headers=api.operator)).json()[0]
    conditions = {c["type"]: c["status"] for c in shown["status"]["conditions"]}
    assert conditions["Ready"] == "False" and conditions["Degraded"] == "True"


async def test_a_pipeline_deployment_carries_the_file_and_the_streams(
    api: Api, tmp_path: Path
) -> None:
    await api.enrol("edge-1")
    await api.enrol("edge-2")
    pipeline = {"name": "traffic", "sources": [{"id": "road", "kind": "synthetic", "count": 1}]}
    stored = await api.http.put(
        "/v1/pipelines/traffic",
        json={"file": "traffic.yaml", "content": pipeline},
        headers=api.operator,
    )
    assert stored.status_code == 200, stored.text
    spec = {"pipeline": {"name": "traffic", "file": "traffic.yaml"}, "streams": 5, "replicas": 2}
    assert (await api.apply("t", spec)).status_code == 201
    shares = []
    for node in ("edge-1", "edge-2"):
        [assignment] = api.service.desired(node).assignments
        assert assignment.kind == "pipeline" and assignment.pipeline == pipeline
        shares.append(assignment.streams)
    assert sorted(shares) == [2, 3]
    missing = await api.apply("u", {"pipeline": {"name": "nowhere"}})
    assert missing.status_code == 422
    assert (
        "spec.pipeline.name: the controller holds no pipeline 'nowhere'" in missing.json()["error"]
    )


async def test_a_new_model_version_reaches_the_nodes(api: Api, tmp_path: Path) -> None:
    await api.enrol("edge-1")
    first = await api.push(tmp_path, scale=2.0)
    await api.apply("m", {"model": {"name": "detector"}})
    generation = api.service.desired("edge-1").generation
    second = await api.push(tmp_path, scale=3.0)
    assert second["version"] == 2 and second["digest"] != first["digest"]
    desired = api.service.desired("edge-1")
    assert desired.generation == generation + 1
    assert desired.assignments[0].model is not None
    assert desired.assignments[0].model.digest == second["digest"]


async def test_restart_keeps_state_and_a_second_pass_changes_nothing(
    api: Api, service: ControlService, clock: Clock, tmp_path: Path
) -> None:
    await api.enrol("edge-1")
    await api.enrol("edge-2")
    await api.push(tmp_path)
    await api.apply("m", {"model": {"name": "detector"}, "replicas": 2})
    generations = {n: service.desired(n).generation for n in ("edge-1", "edge-2")}
    events = len(service.events(limit=5000))
    again = ControlService(service.settings, clock=clock, policy=service.policy)
    again.start()
    assert again.reconcile() == {}  # idempotent: nothing moves, no generation bumps
    assert again.reconcile() == {}
    assert {n: again.desired(n).generation for n in generations} == generations
    assert len(again.events(limit=5000)) == events
    assert (
        again.get_deployment("m")["status"]["placements"]
        == service.get_deployment("m")["status"]["placements"]
    )
    again.close()


async def test_openapi_schema_and_health(api: Api) -> None:
    schema = (await api.http.get("/openapi.json")).json()
    for path in ("/v1/enrol", "/v1/nodes/{node}/desired", "/v1/deployments/{name}", "/v1/tokens"):
        assert path in schema["paths"]
    assert "EnrolRequest" in schema["components"]["schemas"]
    assert (await api.http.get("/healthz")).json()["status"] == "ok"
    metrics = (await api.http.get("/metrics")).text
    assert (
        'edgetier_controller_requests_total{code="200",method="GET",route="/openapi.json"}'
        in metrics
    )


async def test_a_restarted_controller_gives_nodes_a_timeout_before_they_count_as_lost(
    api: Api, clock: Clock, tmp_path: Path
) -> None:
    """While the controller was down no heartbeat could arrive: the nodes are not lost
    for that, only once a whole node timeout passes after its start without one."""
    from edgetier.control import ControllerSettings

    await api.enrol("edge-1")
    await api.push(tmp_path)
    await api.apply("m", {"model": {"name": "detector"}})
    assert await _placed(api, "m") == ["edge-1"]
    clock.advance(60)  # the controller was down for a minute
    settings = ControllerSettings(
        data_dir=tmp_path / "controller",
        node_timeout_s=15,
        database_url=api.service.settings.database_url,
    )
    restarted = ControlService(settings, clock=clock, policy=api.service.policy)
    restarted.start()
    try:
        assert restarted.check_timeouts() == []
        clock.advance(10)
        restarted.heartbeat("edge-1", Heartbeat())
        clock.advance(10)  # 20 s after the start, 10 s after the heartbeat
        assert restarted.check_timeouts() == []
        clock.advance(10)
        assert restarted.check_timeouts() == ["edge-1"]  # a whole timeout without one
    finally:
        restarted.close()


async def test_the_scheduler_sees_what_other_deployments_take_of_a_node(
    tmp_path: Path, clock: Clock, database_url: str | None
) -> None:
    """``node.status.load``: each other deployment's share and streams on the node (its
    own never), so that capacity already given is not given twice."""
    from edgetier.control import (
        Binding,
        ControllerSettings,
        EnrolRequest,
        ModelVersionInfo,
        Node,
        NodeReport,
        PlacedLoad,
    )
    from edgetier.control import Deployment as DeploymentResource

    class Recording(SpreadPolicy):
        """Each placement takes a quarter of its node; records the loads it was shown."""

        def __init__(self) -> None:
            self.seen: dict[str, dict[str, tuple[list[str], dict[str, PlacedLoad]]]] = {}

        def filter(
            self, deployment: DeploymentResource, node: Node, model: ModelVersionInfo | None
        ) -> NodeReport:
            shown = (list(node.status.placements), dict(node.status.load))
            self.seen.setdefault(deployment.name, {})[node.name] = shown
            return super().filter(deployment, node, model)

        def bind(
            self,
            deployment: DeploymentResource,
            ranked: list[tuple[Node, NodeReport]],
            model: ModelVersionInfo | None,
        ) -> Binding:
            binding = super().bind(deployment, ranked, model)
            for placement in binding.placements:
                placement.share = 0.25
            return binding

    policy = Recording()
    settings = ControllerSettings(
        data_dir=tmp_path / "controller", node_timeout_s=15, database_url=database_url
    )
    service = ControlService(settings, clock=clock, policy=policy)
    service.start()
    try:
        token = service.create_token("enrol", expires_in_s=None)["token"]
        service.enrol(EnrolRequest(token=token, name="edge-1", tier="edge", profile="t4"))
        service.put_pipeline("p", {"name": "p"})

        def deployment(name: str, streams: int) -> dict[str, Any]:
            spec = {"pipeline": {"name": "p"}, "streams": streams}
            return {
                "apiVersion": "edgetier/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": spec,
            }

        service.apply("a", deployment("a", 4))
        assert policy.seen["a"] == {"edge-1": ([], {})}
        service.apply("b", deployment("b", 2))
        assert policy.seen["b"] == {"edge-1": (["a"], {"a": PlacedLoad(share=0.25, streams=4)})}
        service.reconcile()
        assert policy.seen["a"] == {"edge-1": (["b"], {"b": PlacedLoad(share=0.25, streams=2)})}
    finally:
        service.close()

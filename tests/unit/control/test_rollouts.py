"""The rollout driver's state machine: a new model version goes out batch by batch behind
its gates (load errors, Degraded, error rate, p99 latency, soak time, progress deadline),
pauses, resumes and is undone; a failed gate rolls every node back to the previous
version. The nodes' reports are heartbeats sent straight to the service; the clock is the
test's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Api, Clock

from edgetier.control import (
    Condition,
    ControlService,
    Heartbeat,
    WorkloadHealth,
    WorkloadState,
)

NODES = ("edge-1", "edge-2", "edge-3")
ROLLOUT = {"batches": 3, "soak_s": 10, "progress_deadline_s": 120, "min_requests": 10}


def _spec(version: int, **rollout: Any) -> dict[str, Any]:
    return {
        "model": {"name": "detector", "version": version},
        "selector": {"tiers": ["edge"]},
        "replicas": 3,
        "latency_target_ms": 100,
        "rollout": {**ROLLOUT, **rollout},
    }


def _assigned(service: ControlService, node: str) -> dict[str, Any]:
    [assignment] = service.desired(node).model_dump(mode="json")["assignments"]
    return dict(assignment)


def _versions(service: ControlService) -> dict[str, int]:
    return {node: _assigned(service, node)["model"]["version"] for node in NODES}


def _report(
    service: ControlService,
    node: str,
    phase: str = "Running",
    *,
    health: WorkloadHealth | None = None,
    degraded: tuple[str, str] | None = None,
) -> None:
    """The node runs what it is told to (its assignment's revision) in ``phase``."""
    assignment = _assigned(service, node)
    conditions = []
    if degraded is not None:
        conditions.append(
            Condition(type="Degraded", status="True", reason=degraded[0], message=degraded[1])
        )
    workload = WorkloadState(
        deployment=assignment["deployment"],
        generation=assignment["generation"],
        revision=assignment["revision"],
        phase=phase,  # type: ignore[arg-type]
        conditions=conditions,
        health=health,
    )
    service.heartbeat(node, Heartbeat(workloads=[workload]))


def _report_all(service: ControlService) -> None:
    for node in NODES:
        _report(service, node)


async def _rollout(api: Api) -> dict[str, Any]:
    answer = await api.http.get("/v1/deployments/m/rollout", headers=api.operator)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def _fleet(api: Api, tmp_path: Path, **rollout: Any) -> None:
    """Three edge nodes running version 1 of the model; version 2 pushed, not applied."""
    for node in NODES:
        await api.enrol(node)
    await api.push(tmp_path, scale=1.0)
    await api.push(tmp_path, scale=2.0)
    assert (await api.apply("m", _spec(1, **rollout))).status_code == 201
    _report_all(api.service)


async def test_a_first_deployment_is_no_rollout(api: Api, tmp_path: Path) -> None:
    await _fleet(api, tmp_path)
    assert _versions(api.service) == dict.fromkeys(NODES, 1)
    answer = await api.http.get("/v1/deployments/m/rollout", headers=api.operator)
    assert answer.status_code == 404 and "no rollout" in answer.json()["error"]
    assert (await api.http.get("/v1/rollouts", headers=api.operator)).json() == []


async def test_a_good_version_goes_through_every_batch_after_its_soak(
    api: Api, tmp_path: Path, clock: Clock
) -> None:
    service = api.service
    await _fleet(api, tmp_path)
    applied = await api.apply("m", _spec(2))
    assert applied.status_code == 200
    shown = await _rollout(api)
    assert shown["state"] == "Progressing" and (shown["batch"], shown["batches"]) == (1, 3)
    assert (shown["from_revision"], shown["to_revision"]) == (1, 2)
    assert (shown["nodes_updated"], shown["nodes_total"]) == (1, 3)
    [first] = shown["updated_nodes"]
    assert _versions(service)[first] == 2
    deployment = (await api.http.get("/v1/deployments/m", headers=api.operator)).json()
    progressing = {c["type"]: c for c in deployment["status"]["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("True", "RolloutProgressing")
    assert sorted(v for n, v in _versions(service).items() if n != first) == [1, 1]

    service.drive_rollouts()
    assert "waiting for" in (await _rollout(api))["message"]  # not running it yet
    _report(service, first)
    service.drive_rollouts()
    assert (await _rollout(api))["batch"] == 1  # running, soaking
    clock.advance(5)
    service.drive_rollouts()
    assert "soaking 5 of 10 s" in (await _rollout(api))["message"]
    clock.advance(6)
    assert service.drive_rollouts() == ["m"]
    shown = await _rollout(api)
    assert shown["batch"] == 2 and shown["nodes_updated"] == 2
    assert sorted(_versions(service).values()) == [1, 2, 2]

    _report_all(service)
    service.drive_rollouts()
    clock.advance(11)
    service.drive_rollouts()
    assert (await _rollout(api))["batch"] == 3
    assert _versions(service) == dict.fromkeys(NODES, 2)
    _report_all(service)
    service.drive_rollouts()
    clock.advance(11)
    service.drive_rollouts()
    shown = await _rollout(api)
    assert shown["state"] == "Succeeded" and shown["nodes_updated"] == 3
    kinds = [e["kind"] for e in service.events(kind=None) if e["kind"].startswith("Rollout")]
    assert kinds == [
        "RolloutStarted",
        "RolloutBatchStarted",
        "RolloutBatchStarted",
        "RolloutSucceeded",
    ]
    # the deployment is Ready on its new generation
    deployment = (await api.http.get("/v1/deployments/m", headers=api.operator)).json()
    ready = {c["type"]: c for c in deployment["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True"


async def test_a_version_that_fails_to_load_is_rolled_back_on_batch_one(
    api: Api, tmp_path: Path
) -> None:
    service = api.service
    await _fleet(api, tmp_path)
    await api.apply("m", _spec(2))
    [first] = (await _rollout(api))["updated_nodes"]
    generations = {n: service.desired_generation(n) for n in NODES}
    _report(service, first, "Failed")
    assert service.drive_rollouts() == ["m"]
    shown = await _rollout(api)
    assert shown["state"] == "RolledBack" and shown["reason"] == "LoadFailed"
    assert shown["batch"] == 1 and first in shown["message"]
    assert shown["nodes_updated"] == 0
    assert _versions(service) == dict.fromkeys(NODES, 1)
    # only the node that had the new version was told anything new
    changed = [n for n in NODES if service.desired_generation(n) != generations[n]]
    assert changed == [first]
    metrics = (await api.http.get("/metrics")).text
    assert 'edgetier_controller_rollouts{state="RolledBack"} 1.0' in metrics
    assert 'edgetier_controller_rollouts{state="Progressing"} 0.0' in metrics
    # it stays back: the pass is idempotent, and the spec still names version 2
    service.reconcile(None)
    service.drive_rollouts()
    assert _versions(service) == dict.fromkeys(NODES, 1)
    [event] = service.events(kind="RolloutRolledBack")
    assert event["data"]["reason"] == "LoadFailed" and event["data"]["back_to_revision"] == 1
    # the deployment says it does not run what its spec names
    deployment = (await api.http.get("/v1/deployments/m", headers=api.operator)).json()
    degraded = {c["type"]: c for c in deployment["status"]["conditions"]}["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")


async def test_after_a_rollback_naming_the_old_version_settles_and_a_retry_rolls_out(
    api: Api, tmp_path: Path
) -> None:
    service = api.service
    await _fleet(api, tmp_path)
    await api.apply("m", _spec(2))
    [first] = (await _rollout(api))["updated_nodes"]
    _report(service, first, "Failed")
    service.drive_rollouts()
    await api.apply("m", _spec(1))  # back to what runs: nothing moves
    assert _versions(service) == dict.fromkeys(NODES, 1)
    assert "settled" in (await _rollout(api))["message"]
    _report_all(service)
    await api.apply("m", _spec(2))  # a retry of version 2: a new rollout
    shown = await _rollout(api)
    assert shown["state"] == "Progressing" and shown["nodes_updated"] == 1
    assert sorted(_versions(service).values()) == [1, 1, 2]


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ({"degraded": ("LoadFailed", "load detector: 400: bad graph")}, "LoadFailed"),
        ({"health": WorkloadHealth(requests=100, errors=20, latency_p99_ms=5)}, "ErrorRate"),
        ({"health": WorkloadHealth(requests=100, errors=0, latency_p99_ms=250)}, "Latency"),
    ],
)
async def test_each_gate_stops_and_rolls_back(
    api: Api, tmp_path: Path, clock: Clock, report: dict[str, Any], reason: str
) -> None:
    service = api.service
    await _fleet(api, tmp_path)
    await api.apply("m", _spec(2))
    [first] = (await _rollout(api))["updated_nodes"]
    _report(service, first)
    service.drive_rollouts()
    clock.advance(3)  # within its soak
    _report(service, first, **report)
    service.drive_rollouts()
    shown = await _rollout(api)
    assert (shown["state"], shown["reason"]) == ("RolledBack", reason)
    assert _versions(service) == dict.fromkeys(NODES, 1)


async def test_figures_within_the_limits_or_too_few_requests_pass(
    api: Api, tmp_path: Path, clock: Clock
) -> None:
    service = api.service
    await _fleet(api, tmp_path)
    await api.apply("m", _spec(2))
    [first] = (await _rollout(api))["updated_nodes"]
    _report(service, first, health=WorkloadHealth(requests=100, errors=2, latency_p99_ms=80))
    service.drive_rollouts()
    _report(service, first, health=WorkloadHealth(requests=5, errors=5, latency_p99_ms=900))
    clock.advance(11)
    service.drive_rollouts()
    assert (await _rollout(api))["batch"] == 2


async def test_a_batch_not_running_by_the_deadline_is_rolled_back(
    api: Api, tmp_path: Path, clock: Clock
) -> None:
    service = api.service
    await _fleet(api, tmp_path)
    await api.apply("m", _spec(2))
    clock.advance(100)
    service.drive_rollouts()
    assert (await _rollout(api))["state"] == "Progressing"
    clock.advance(21)
    for node in NODES:  # keep them online; the first never runs the new version
        service.heartbeat(node, Heartbeat())
    service.drive_rollouts()
    shown = await _rollout(api)
    assert (shown["state"], shown["reason"]) == ("RolledBack", "ProgressDeadline")


async def test_pause_resume_and_undo(api: Api, tmp_path: Path, clock: Clock) -> None:
    service = api.service
    await _fleet(api, tmp_path)
    await api.apply("m", _spec(2))
    [first] = (await _rollout(api))["updated_nodes"]
    paused = await api.http.post("/v1/deployments/m/rollout/pause", headers=api.operator)
    assert paused.status_code == 200 and paused.json()["state"] == "Paused"
    _report(service, first)
    clock.advance(60)
    assert service.drive_rollouts() == []
    assert (await _rollout(api))["batch"] == 1  # paused: nothing moves
    again = await api.http.post("/v1/deployments/m/rollout/pause", headers=api.operator)
    assert again.status_code == 409 and "Paused" in again.json()["error"]
    resumed = await api.http.post("/v1/deployments/m/rollout/resume", headers=api.operator)
    assert resumed.json()["state"] == "Progressing"
    service.drive_rollouts()
    clock.advance(11)
    service.drive_rollouts()
    assert (await _rollout(api))["batch"] == 2
    undone = await api.http.post("/v1/deployments/m/rollout/undo", headers=api.operator)
    assert undone.status_code == 200 and undone.json()["state"] == "Undone"
    assert _versions(service) == dict.fromkeys(NODES, 1)
    refused = await api.http.post("/v1/deployments/m/rollout/resume", headers=api.operator)
    assert refused.status_code == 409
    unknown = await api.http.post("/v1/deployments/nope/rollout/undo", headers=api.operator)
    assert unknown.status_code == 404
    bad = await api.http.post("/v1/deployments/m/rollout/restart", headers=api.operator)
    assert bad.status_code == 422
    kinds = [e["kind"] for e in service.events() if e["kind"].startswith("Rollout")]
    assert kinds[-3:] == ["RolloutResumed", "RolloutBatchStarted", "RolloutUndone"]


async def test_a_newer_version_supersedes_a_rollout_from_the_stable_one(
    api: Api, tmp_path: Path
) -> None:
    service = api.service
    await _fleet(api, tmp_path)
    await api.push(tmp_path, scale=3.0)
    await api.apply("m", _spec(2))
    await api.apply("m", _spec(3))
    shown = await _rollout(api)
    assert shown["state"] == "Progressing" and shown["to"].startswith("model detector version 3")
    assert shown["from"].startswith("model detector version 1")
    assert sorted(_versions(service).values()) == [1, 1, 3]
    assert len(service.events(kind="RolloutSuperseded")) == 1


async def test_a_pushed_version_of_an_unpinned_model_rolls_out_and_other_changes_do_not(
    api: Api, tmp_path: Path
) -> None:
    service = api.service
    for node in NODES:
        await api.enrol(node)
    await api.push(tmp_path, scale=1.0)
    spec = {**_spec(1), "model": {"name": "detector"}}
    await api.apply("m", spec)
    _report_all(service)
    await api.apply("m", {**spec, "latency_target_ms": 150})  # not a new version
    assert (await api.http.get("/v1/rollouts", headers=api.operator)).json() == []
    await api.push(tmp_path, scale=2.0)
    [shown] = (await api.http.get("/v1/rollouts", headers=api.operator)).json()
    assert shown["deployment"] == "m" and shown["nodes_updated"] == 1
    assert sorted(_versions(service).values()) == [1, 1, 2]
    # the same generation on both sides: the revision tells the nodes' reports apart
    assert shown["from_revision"] == shown["to_revision"] == 2
    expected = {
        "deployment", "state", "from_revision", "to_revision", "batch", "batches",
        "nodes_updated", "nodes_total", "message", "started_at", "updated_at",
    }  # fmt: skip
    assert expected <= set(shown)


async def test_a_rollout_goes_with_its_deployment(api: Api, tmp_path: Path) -> None:
    await _fleet(api, tmp_path)
    await api.apply("m", _spec(2))
    deleted = await api.http.delete("/v1/deployments/m", headers=api.operator)
    assert deleted.status_code == 200
    assert (await api.http.get("/v1/rollouts", headers=api.operator)).json() == []

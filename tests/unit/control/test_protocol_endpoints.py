"""The agent protocol's server side: enrol, heartbeat, desired state with ETag and long
poll, idempotent records, artifacts for the nodes they are assigned to."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

from conftest import Api, Clock


async def test_enrol_registers_the_node_and_refuses_bad_requests(api: Api) -> None:
    first = await api.enrol("edge-1", tier="edge", profile="jetson-xavier-nx")
    nodes = (await api.http.get("/v1/nodes", headers=api.operator)).json()
    assert [(n["metadata"]["name"], n["spec"]["tier"], n["spec"]["profile"]) for n in nodes] == [
        ("edge-1", "edge", "jetson-xavier-nx")
    ]
    # the same machine back with a new token: the node keeps its place, its old
    # credential is revoked and the new one works
    token = await api.enrol_token()
    again = await api.http.post(
        "/v1/enrol", json={"token": token, "name": "edge-1", "tier": "edge", "profile": "t4"}
    )
    assert again.status_code == 201
    second = {"Authorization": f"Bearer {again.json()['credential']}"}
    old = await api.http.get("/v1/nodes/edge-1/desired", headers=first)
    assert old.status_code == 401 and "revoked" in old.json()["error"]
    assert (await api.http.get("/v1/nodes/edge-1/desired", headers=second)).status_code == 200
    nodes = (await api.http.get("/v1/nodes", headers=api.operator)).json()
    assert [(n["metadata"]["name"], n["spec"]["profile"]) for n in nodes] == [("edge-1", "t4")]
    token = await api.enrol_token()
    bad = await api.http.post(
        "/v1/enrol", json={"token": token, "name": "Edge_1", "tier": "moon", "profile": "t4"}
    )
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert "name: must match" in error and "tier: must be one of" in error
    unknown = await api.http.post(
        "/v1/enrol", json={"token": token, "name": "edge-2", "tier": "edge", "profile": "gtx-9000"}
    )
    assert unknown.status_code == 422 and "profile" in unknown.json()["error"]
    # the token was not spent by the refusals
    ok = await api.http.post(
        "/v1/enrol", json={"token": token, "name": "edge-2", "tier": "edge", "profile": "t4"}
    )
    assert ok.status_code == 201


async def test_heartbeat_updates_telemetry_and_conditions(api: Api, clock: Clock) -> None:
    node = await api.enrol("edge-1")
    beat = {
        "telemetry": {"utilisation": 0.5, "temperature_c": 60.0, "power_w": 12.0},
        "conditions": [{"type": "Degraded", "status": "False", "reason": "Fine"}],
        "workloads": [],
        "desired_generation": 0,
        "outbox_pending": 3,
    }
    reply = await api.http.post("/v1/nodes/edge-1/heartbeat", json=beat, headers=node)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"desired_generation": 0, "heartbeat_interval_s": 5.0}
    shown = (await api.http.get("/v1/nodes/edge-1", headers=api.operator)).json()
    status = shown["status"]
    assert status["telemetry"]["temperature_c"] == 60.0
    assert status["outbox_pending"] == 3
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Offline": "False", "Ready": "True", "Degraded": "False"}
    # a heartbeat sets the summary; the history comes from the outbox's telemetry records
    assert shown["telemetry_history"] == []
    sample = {"sequence": 1, "time": "2026-12-01T12:00:00Z", "kind": "telemetry"}
    sample["data"] = {"utilisation": 0.5, "power_w": 12.0}
    stored = await api.http.post(
        "/v1/nodes/edge-1/records", json={"records": [sample]}, headers=node
    )
    assert stored.status_code == 200, stored.text
    shown = (await api.http.get("/v1/nodes/edge-1", headers=api.operator)).json()
    assert shown["telemetry_history"][-1]["power_w"] == 12.0
    bad = await api.http.post(
        "/v1/nodes/edge-1/heartbeat", json={"telemetry": {"utilisation": 3}}, headers=node
    )
    assert bad.status_code == 422 and "telemetry.utilisation: must be <= 1" in bad.json()["error"]


async def test_desired_state_etag_and_conditional_get(api: Api, tmp_path: Path) -> None:
    node = await api.enrol("edge-1")
    first = await api.http.get("/v1/nodes/edge-1/desired", headers=node)
    assert first.status_code == 200 and first.headers["etag"] == '"0"'
    assert first.json() == {"node": "edge-1", "generation": 0, "assignments": []}
    unchanged = await api.http.get(
        "/v1/nodes/edge-1/desired", headers={**node, "If-None-Match": '"0"'}
    )
    assert unchanged.status_code == 304 and unchanged.headers["etag"] == '"0"'
    await api.push(tmp_path)
    await api.apply("m", {"model": {"name": "detector"}})
    changed = await api.http.get(
        "/v1/nodes/edge-1/desired", headers={**node, "If-None-Match": '"0"'}
    )
    assert changed.status_code == 200 and changed.headers["etag"] == '"1"'
    [assignment] = changed.json()["assignments"]
    assert assignment["deployment"] == "m" and assignment["kind"] == "model"
    assert assignment["model"]["digest"].startswith("sha256:")


async def test_long_poll_returns_at_once_on_a_change(api: Api, tmp_path: Path) -> None:
    node = await api.enrol("edge-1")
    await api.push(tmp_path)
    poll = asyncio.create_task(
        api.http.get(
            "/v1/nodes/edge-1/desired",
            params={"wait_s": 30},
            headers={**node, "If-None-Match": '"0"'},
        )
    )
    for _ in range(200):  # until the poll is parked on the node's condition
        if api.service.notifier.waiting:
            break
        await asyncio.sleep(0.01)
    assert api.service.notifier.waiting == 1
    applied = await api.apply("m", {"model": {"name": "detector"}})
    assert applied.status_code == 201
    answer = await asyncio.wait_for(poll, timeout=10)  # far below the 30 s it may wait
    assert answer.status_code == 200 and answer.headers["etag"] == '"1"'
    assert api.service.notifier.waiting == 0


async def test_long_poll_answers_304_after_wait_s_without_a_change(api: Api) -> None:
    node = await api.enrol("edge-1")
    answer = await api.http.get(
        "/v1/nodes/edge-1/desired",
        params={"wait_s": 0.2},
        headers={**node, "If-None-Match": '"0"'},
    )
    assert answer.status_code == 304
    too_long = await api.http.get("/v1/nodes/edge-1/desired", params={"wait_s": 61}, headers=node)
    assert too_long.status_code == 422 and "wait_s" in too_long.json()["error"]


def _records(*sequences: int, kind: str = "event") -> dict[str, object]:
    return {
        "records": [
            {
                "sequence": s,
                "time": f"2026-01-01T11:59:{s:02d}Z",
                "kind": kind,
                "subject": "traffic",
                "data": {"n": s, "utilisation": 0.1 * s},
            }
            for s in sequences
        ]
    }


async def test_records_are_stored_once_and_a_gap_is_refused(api: Api) -> None:
    node = await api.enrol("edge-1")
    url = "/v1/nodes/edge-1/records"
    first = await api.http.post(url, json=_records(1, 2, 3), headers=node)
    assert first.json() == {"acked_through": 3, "duplicates": 0}
    again = await api.http.post(url, json=_records(2, 3, 4), headers=node)
    assert again.json() == {"acked_through": 4, "duplicates": 2}
    gap = await api.http.post(url, json=_records(5, 7), headers=node)
    assert gap.status_code == 409
    assert gap.json()["expected_sequence"] == 6
    assert "sequence 7 leaves a gap; expected 6" in gap.json()["error"]
    # the refused batch stored nothing, not even its first record
    events = (
        await api.http.get("/v1/events", params={"source": "edge-1"}, headers=api.operator)
    ).json()
    assert [e["sequence"] for e in events] == [1, 2, 3, 4]
    assert [e["data"]["n"] for e in events] == [1, 2, 3, 4]
    after = await api.http.get(
        "/v1/events", params={"source": "edge-1", "after": 2}, headers=api.operator
    )
    assert [e["sequence"] for e in after.json()] == [3, 4]
    resume = await api.http.post(url, json=_records(5, 6), headers=node)
    assert resume.json() == {"acked_through": 6, "duplicates": 0}
    metrics = (await api.http.get("/metrics")).text
    assert "edgetier_controller_records_ingested_total 6.0" in metrics
    assert "edgetier_controller_records_duplicate_total 2.0" in metrics


async def test_telemetry_records_become_samples_in_the_same_sequence(api: Api) -> None:
    node = await api.enrol("edge-1")
    url = "/v1/nodes/edge-1/records"
    await api.http.post(url, json=_records(1, 2, kind="telemetry"), headers=node)
    answer = await api.http.post(url, json=_records(3), headers=node)
    assert answer.json()["acked_through"] == 3
    events = (
        await api.http.get("/v1/events", params={"source": "edge-1"}, headers=api.operator)
    ).json()
    assert [e["sequence"] for e in events] == [3]
    shown = (
        await api.http.get("/v1/nodes/edge-1", params={"history_s": 86400}, headers=api.operator)
    ).json()
    samples = [s["utilisation"] for s in shown["telemetry_history"]]
    assert samples == [0.1, 0.2]


async def test_artifacts_only_for_the_nodes_they_are_assigned_to(api: Api, tmp_path: Path) -> None:
    one = await api.enrol("edge-1")
    two = await api.enrol("edge-2")
    pushed = await api.push(tmp_path)
    digest = pushed["digest"]
    await api.apply("m", {"model": {"name": "detector"}, "replicas": 1})
    placed_on = (await api.http.get("/v1/deployments/m", headers=api.operator)).json()
    [placement] = placed_on["status"]["placements"]
    holder, other = (one, two) if placement["node"] == "edge-1" else (two, one)
    answer = await api.http.get(f"/v1/artifacts/{digest}", headers=holder)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    data = answer.content
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
    expected = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert answer.headers["digest"] == f"sha-256={expected}"
    refused = await api.http.get(f"/v1/artifacts/{digest}", headers=other)
    assert refused.status_code == 403 and "is not assigned to node" in refused.json()["error"]
    assert (await api.http.get(f"/v1/artifacts/{digest}", headers=api.operator)).status_code == 200
    assert (await api.http.get(f"/v1/artifacts/{digest}")).status_code == 401
    missing = "sha256:" + "0" * 64
    assert (await api.http.get(f"/v1/artifacts/{missing}", headers=api.operator)).status_code == 404
    bad = await api.http.get("/v1/artifacts/md5:abc", headers=api.operator)
    assert bad.status_code == 400 and "sha256:<64 hex digits>" in bad.json()["error"]


async def test_unknown_node_is_404(api: Api) -> None:
    answer = await api.http.get("/v1/nodes/ghost", headers=api.operator)
    assert answer.status_code == 404 and "no node named 'ghost'" in answer.json()["error"]


async def test_a_node_renews_its_credential(api: Api) -> None:
    node = await api.enrol("edge-1")
    answer = await api.http.post("/v1/nodes/edge-1/credential", headers=node)
    assert answer.status_code == 200, answer.text
    fresh = {"Authorization": f"Bearer {answer.json()['credential']}"}
    assert (
        await api.http.post("/v1/nodes/edge-1/heartbeat", json={}, headers=fresh)
    ).status_code == 200
    old = await api.http.post("/v1/nodes/edge-1/heartbeat", json={}, headers=node)
    assert old.status_code == 401 and "revoked" in old.json()["error"]


async def test_a_parked_long_poll_is_answered_at_shutdown(api: Api) -> None:
    node = await api.enrol("edge-1")
    poll = asyncio.create_task(
        api.http.get(
            "/v1/nodes/edge-1/desired",
            params={"wait_s": 60},
            headers={**node, "If-None-Match": '"0"'},
        )
    )
    for _ in range(200):
        if api.service.notifier.waiting:
            break
        await asyncio.sleep(0.01)
    assert api.service.notifier.waiting == 1
    api.service.notifier.close()
    answer = await asyncio.wait_for(poll, timeout=10)  # not the 60 s it asked for
    assert answer.status_code == 304 and answer.headers["etag"] == '"0"'

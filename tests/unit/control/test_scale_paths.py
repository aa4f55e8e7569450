"""The controller's paths for a large fleet: node requests through a bounded gate (503
with Retry-After beyond it, operators still served), the node list a page at a time and
built again only where a node changed, cached principals that a revocation clears."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from conftest import Api, Clock

from edgetier.control._gate import NodeGate
from edgetier.errors import QueueFullError

BEAT: dict[str, Any] = {"telemetry": {"utilisation": 0.5, "temperature_c": 50.0}}


async def test_the_gate_runs_at_most_its_concurrency_and_refuses_past_its_line() -> None:
    gate = NodeGate(concurrency=1, max_waiting=1, retry_after_s=2.0)
    release = threading.Event()
    running: list[int] = []

    def work(n: int) -> int:
        running.append(n)
        release.wait(10)
        return n

    first = asyncio.create_task(gate.run(work, 1))
    second = asyncio.create_task(gate.run(work, 2))
    while not running:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert running == [1]  # the second waits in line for the one thread
    with pytest.raises(QueueFullError) as refused:
        await gate.run(work, 3)
    assert refused.value.retry_after_s == 2.0 and "1 node requests are waiting" in str(
        refused.value
    )
    release.set()
    assert await first == 1 and await second == 2
    assert gate.refused == 1 and gate.inside == 0
    assert await gate.run(work, 4) == 4  # room again


async def test_an_overloaded_controller_refuses_node_requests_with_503_not_operators(
    api: Api,
) -> None:
    headers = await api.enrol("edge-1")
    gate = api.service.node_gate
    gate.concurrency, gate.max_waiting = 1, 0
    gate.reset()
    release = threading.Event()
    started = threading.Event()
    heartbeat = api.service.heartbeat

    def slow_heartbeat(*args: Any) -> Any:
        started.set()
        release.wait(10)
        return heartbeat(*args)

    api.service.heartbeat = slow_heartbeat  # type: ignore[method-assign]
    busy = asyncio.create_task(
        api.http.post("/v1/nodes/edge-1/heartbeat", json=BEAT, headers=headers)
    )
    while not started.is_set():
        await asyncio.sleep(0.01)
    record = {"sequence": 1, "time": "2026-01-01T12:00:00Z", "kind": "telemetry", "data": {}}
    refused = await api.http.post(
        "/v1/nodes/edge-1/records", json={"records": [record]}, headers=headers
    )
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "overloaded" in refused.json()["error"]
    # operators keep their own threads while the node's gate is full
    listed = await api.http.get("/v1/nodes", headers=api.operator)
    assert listed.status_code == 200 and [n["metadata"]["name"] for n in listed.json()] == [
        "edge-1"
    ]
    release.set()
    assert (await busy).status_code == 200


async def test_the_node_list_pages_with_limit_and_continue(api: Api) -> None:
    for name in ("edge-3", "edge-1", "edge-5", "edge-2", "edge-4"):
        await api.enrol(name)
    everything = await api.http.get("/v1/nodes", headers=api.operator)
    assert everything.status_code == 200 and "x-continue" not in everything.headers
    names = [n["metadata"]["name"] for n in everything.json()]
    assert names == ["edge-1", "edge-2", "edge-3", "edge-4", "edge-5"]
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        answer = await api.http.get("/v1/nodes", params=params, headers=api.operator)
        assert answer.status_code == 200
        pages.append(answer.json())
        if "x-continue" not in answer.headers:
            break
        params["continue"] = answer.headers["x-continue"]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [n for page in pages for n in page] == everything.json()
    exact = await api.http.get("/v1/nodes", params={"limit": 5}, headers=api.operator)
    assert len(exact.json()) == 5 and "x-continue" not in exact.headers
    bad = await api.http.get("/v1/nodes", params={"limit": 0}, headers=api.operator)
    assert bad.status_code == 422 and "limit" in bad.json()["error"]


async def test_the_node_list_rebuilds_only_the_nodes_that_changed(api: Api, clock: Clock) -> None:
    headers = {name: await api.enrol(name) for name in ("edge-1", "edge-2", "edge-3")}
    cache = api.service.node_list
    first = (await api.http.get("/v1/nodes", headers=api.operator)).json()
    built = cache.built
    again = (await api.http.get("/v1/nodes", headers=api.operator)).json()
    assert again == first and cache.built == built  # nothing changed, nothing built
    clock.advance(5)
    beat = {"telemetry": {"utilisation": 0.25, "temperature_c": 71.0}}
    answer = await api.http.post("/v1/nodes/edge-2/heartbeat", json=beat, headers=headers["edge-2"])
    assert answer.status_code == 200
    after = {
        n["metadata"]["name"]: n
        for n in (await api.http.get("/v1/nodes", headers=api.operator)).json()
    }
    assert cache.built == built + 1
    assert after["edge-2"]["status"]["telemetry"]["temperature_c"] == 71.0
    assert after["edge-2"]["status"]["last_heartbeat"] != first[1]["status"]["last_heartbeat"]
    assert after["edge-1"] == first[0] and after["edge-3"] == first[2]
    # a drained node shows it at once
    await api.http.post("/v1/nodes/edge-3/drain", headers=api.operator)
    listed = (await api.http.get("/v1/nodes", headers=api.operator)).json()
    assert listed[2]["spec"]["unschedulable"] is True


async def test_a_cached_credential_is_refused_as_soon_as_it_is_revoked(api: Api) -> None:
    headers = await api.enrol("edge-1")
    for _ in range(2):  # the second is answered from the cache
        answer = await api.http.post("/v1/nodes/edge-1/heartbeat", json=BEAT, headers=headers)
        assert answer.status_code == 200
    renewed = await api.http.post("/v1/nodes/edge-1/credential", headers=headers)
    assert renewed.status_code == 200
    answer = await api.http.post("/v1/nodes/edge-1/heartbeat", json=BEAT, headers=headers)
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]
    fresh = {"Authorization": f"Bearer {renewed.json()['credential']}"}
    answer = await api.http.post("/v1/nodes/edge-1/heartbeat", json=BEAT, headers=fresh)
    assert answer.status_code == 200
    token_id = renewed.json()["credential"].split("_", 1)[1].split(".", 1)[0]
    revoked = await api.http.delete(f"/v1/tokens/{token_id}", headers=api.operator)
    assert revoked.status_code == 200
    answer = await api.http.post("/v1/nodes/edge-1/heartbeat", json=BEAT, headers=fresh)
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]

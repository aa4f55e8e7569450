"""The controller for real: uvicorn on a free port (in a thread of the test), httpx as the
agents' client, the default placement policy. Enrol, heartbeat, long poll, records,
artifacts, re-placement on drain and on a lost node, and a restart that keeps its state;
each on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgetier.control import Controller, ControllerSettings
from edgetier.testing import eventually as _eventually
from edgetier.testing import free_port, make_random_classifier

pytestmark = pytest.mark.integration


@contextmanager
def _controller(
    data_dir: Path, database_url: str | None, node_timeout_s: float = 60.0
) -> Iterator[tuple[Controller, httpx.Client]]:
    settings = ControllerSettings(
        data_dir=data_dir,
        database_url=database_url,
        port=free_port(),
        node_timeout_s=node_timeout_s,
        resync_s=1.0,
    )
    with Controller(settings).running() as controller:
        operator = {"Authorization": f"Bearer {controller.service.operator_token}"}
        with httpx.Client(base_url=controller.url, headers=operator, timeout=30) as client:
            yield controller, client


def _enrol(client: httpx.Client, name: str, tier: str, profile: str) -> dict[str, str]:
    token = client.post("/v1/tokens", json={"kind": "enrol"}).json()["token"]
    answer = httpx.post(
        f"{client.base_url}/v1/enrol",
        json={"token": token, "name": name, "tier": tier, "profile": profile},
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['credential']}"}


def _push(client: httpx.Client, tmp_path: Path, name: str = "classifier") -> dict[str, Any]:
    path = make_random_classifier(tmp_path / f"{name}.onnx")
    answer = client.post(
        f"/v1/models/{name}/versions", files={"file": ("model.onnx", path.read_bytes())}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _apply(client: httpx.Client, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {
        "apiVersion": "edgetier/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": spec,
    }
    answer = client.put(f"/v1/deployments/{name}", json=body)
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def _placed(client: httpx.Client, name: str) -> list[str]:
    return sorted(
        p["node"] for p in client.get(f"/v1/deployments/{name}").json()["status"]["placements"]
    )


class _Heartbeats:
    """Agents' heartbeats every ``interval_s`` in a thread, until told to stop."""

    def __init__(self, url: str, nodes: dict[str, dict[str, str]], interval_s: float = 0.2) -> None:
        self.nodes = dict(nodes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, interval_s), daemon=True)

    def _run(self, url: str, interval_s: float) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while not self._stop.is_set():
                for name, headers in list(self.nodes.items()):
                    http.post(f"/v1/nodes/{name}/heartbeat", json={}, headers=headers)
                self._stop.wait(interval_s)

    def __enter__(self) -> _Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_agent_protocol_over_http(tmp_path: Path, database_url: str | None) -> None:
    with _controller(tmp_path / "c", database_url) as (controller, client):
        edge = _enrol(client, "edge-1", "edge", "jetson-agx-orin-64gb")
        other = _enrol(client, "edge-2", "edge", "jetson-agx-orin-64gb")
        reply = client.post(
            "/v1/nodes/edge-1/heartbeat", json={"telemetry": {"utilisation": 0.2}}, headers=edge
        )
        assert reply.json()["desired_generation"] == 0
        pushed = _push(client, tmp_path)

        desired_url = f"{controller.url}/v1/nodes/edge-1/desired"
        # nothing changes: 304 once wait_s has passed
        idle = httpx.get(
            desired_url, params={"wait_s": 0.3}, headers={**edge, "If-None-Match": '"0"'}
        )
        assert idle.status_code == 304
        # a long poll parked for 30 s answers as soon as its node's desired state changes
        with ThreadPoolExecutor(1) as pool:
            poll = pool.submit(
                httpx.get,
                desired_url,
                params={"wait_s": 30},
                headers={**edge, "If-None-Match": '"0"'},
                timeout=60,
            )
            assert _eventually(lambda: controller.service.notifier.waiting == 1)
            _apply(client, "m", {"model": {"name": "classifier"}, "replicas": 2})
            answer = poll.result(timeout=15)
        assert answer.status_code == 200 and answer.headers["etag"] == '"1"'
        assignment = answer.json()["assignments"][0]
        assert assignment["model"]["digest"] == pushed["digest"]

        # the artifact: for its node, checked by digest; another node's credential on
        # another node's state is refused
        data = httpx.get(f"{controller.url}/v1/artifacts/{pushed['digest']}", headers=edge)
        assert data.status_code == 200 and len(data.content) == pushed["size_bytes"]
        refused = httpx.get(f"{controller.url}/v1/nodes/edge-1/desired", headers=other)
        assert refused.status_code == 403

        # records: at least once in, exactly once stored, a gap refused
        def records(*sequences: int) -> httpx.Response:
            batch = [
                {"sequence": s, "time": "2026-01-01T00:00:00Z", "kind": "started"}
                for s in sequences
            ]
            return httpx.post(
                f"{controller.url}/v1/nodes/edge-1/records", json={"records": batch}, headers=edge
            )

        assert records(1, 2).json() == {"acked_through": 2, "duplicates": 0}
        assert records(1, 2, 3).json() == {"acked_through": 3, "duplicates": 2}
        gap = records(5)
        assert gap.status_code == 409 and gap.json()["expected_sequence"] == 4
        stored = client.get("/v1/events", params={"source": "edge-1"}).json()
        assert [e["sequence"] for e in stored] == [1, 2, 3]
        metrics = client.get("/metrics").text
        assert 'route="/v1/nodes/{node}/desired"' in metrics
        assert "edgetier_controller_records_duplicate_total 2.0" in metrics


def test_drain_and_a_lost_node_move_the_deployment(
    tmp_path: Path, database_url: str | None
) -> None:
    with _controller(tmp_path / "c", database_url, node_timeout_s=2.0) as (controller, client):
        nodes = {
            name: _enrol(client, name, "edge", "jetson-agx-orin-64gb")
            for name in ("edge-1", "edge-2", "edge-3")
        }
        _push(client, tmp_path)
        with _Heartbeats(controller.url, nodes) as beats:
            _apply(client, "m", {"model": {"name": "classifier"}, "replicas": 1})
            [first] = _placed(client, "m")
            drained = client.post(f"/v1/nodes/{first}/drain")
            assert drained.status_code == 200
            [second] = _placed(client, "m")
            assert second != first
            assert client.get(f"/v1/nodes/{first}").json()["desired"] == []
            # the node holding it disappears: Offline after node_timeout_s, placed again
            del beats.nodes[second]
            assert _eventually(lambda: _placed(client, "m") not in ([second], []), timeout_s=15)
            [third] = _placed(client, "m")
            assert third not in (first, second)
            lost = client.get(f"/v1/nodes/{second}").json()
            offline = {c["type"]: c for c in lost["status"]["conditions"]}["Offline"]
            assert offline["status"] == "True" and offline["reason"] == "NoHeartbeat"
            explain = client.get("/v1/deployments/m/explain").json()
            rejected = {n["node"]: n["rejected"] for n in explain["nodes"]}
            assert any(r.startswith("offline") for r in rejected[second])
            assert any(r.startswith("unschedulable") for r in rejected[first])
        kinds = [
            e["kind"] for e in client.get("/v1/events", params={"source": "controller"}).json()
        ]
        assert "NodeDrained" in kinds and "NodeOffline" in kinds


def test_restart_keeps_state_and_reconciles(tmp_path: Path, database_url: str | None) -> None:
    data_dir = tmp_path / "c"
    with _controller(data_dir, database_url) as (controller, client):
        token = controller.service.operator_token
        nodes = {
            name: _enrol(client, name, "edge", "jetson-agx-orin-64gb")
            for name in ("edge-1", "edge-2")
        }
        _push(client, tmp_path)
        with _Heartbeats(controller.url, nodes):
            _apply(client, "m", {"model": {"name": "classifier"}, "replicas": 1})
            [holder] = _placed(client, "m")
        generations = {
            n: client.get(f"/v1/nodes/{n}").json()["status"]["desired_generation"] for n in nodes
        }
        sequences = [
            e["sequence"] for e in client.get("/v1/events", params={"source": "controller"}).json()
        ]
    survivor = "edge-2" if holder == "edge-1" else "edge-1"
    # the controller is down; it comes back: same token, same nodes, same placements
    with _controller(data_dir, database_url, node_timeout_s=2.0) as (again, client):
        assert again.service.operator_token == token
        assert _placed(client, "m") == [holder]
        beat = httpx.post(
            f"{again.url}/v1/nodes/{survivor}/heartbeat", json={}, headers=nodes[survivor]
        )
        assert (
            beat.status_code == 200 and beat.json()["desired_generation"] == generations[survivor]
        )
        # only the survivor heartbeats now: the holder times out and the loop re-places
        with _Heartbeats(again.url, {survivor: nodes[survivor]}):
            assert _eventually(lambda: _placed(client, "m") == [survivor], timeout_s=15)
        after = [
            e["sequence"] for e in client.get("/v1/events", params={"source": "controller"}).json()
        ]
        assert after[: len(sequences)] == sequences  # the log kept, and went on without a gap
        assert after == list(range(1, len(after) + 1))

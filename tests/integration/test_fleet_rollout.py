"""Rollouts with real agents (issue 15, acceptance 1): a controller and three `edgetier
agent` processes serve version 1 of a model; version 2 goes out in three batches of one
node, each held for its soak time, until every node serves it; version 3 cannot be loaded
(its graph names an operator no runtime has), so the node of its first batch reports it
Degraded, the controller stops the rollout there and rolls it back, and every node ends on
version 2 without the other two ever having been told of version 3. A second test sends
requests through a rollout whose version changed its input shape: the node's own server
counts them failed, its agent reports the error rate, and the gate rolls it back."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
from onnx import helper
from test_fleet_end_to_end import NODES, Fleet, _eventually
from typer.testing import CliRunner

from edgetier.cli._app import app
from edgetier.synthetic import build_demo_repository

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _deployment(version: int) -> dict[str, Any]:
    return {
        "apiVersion": "edgetier/v1",
        "kind": "Deployment",
        "metadata": {"name": "simple"},
        "spec": {
            "model": {"name": "simple", "version": version},
            "selector": {"tiers": ["edge", "terminal"]},
            "replicas": 3,
            "rollout": {"batches": 3, "soak_s": 1.0, "progress_deadline_s": 120},
        },
    }


def _apply(fleet: Fleet, body: dict[str, Any]) -> None:
    answer = httpx.put(
        f"{fleet.url}/v1/deployments/simple", json=body, headers=fleet.operator, timeout=30
    )
    assert answer.status_code in (200, 201), answer.text


def _push(fleet: Fleet, model: Path, config: Path) -> int:
    answer = httpx.post(
        f"{fleet.url}/v1/models/simple/versions",
        files={"file": ("model.onnx", model.read_bytes()), "config": config.read_bytes()},
        headers=fleet.operator,
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["version"])


def _narrow(source: Path, config: Path, folder: Path) -> tuple[Path, Path]:
    """The model with inputs and outputs of 8 values instead of 16, and its config: a
    version whose clients, still sending 16, all fail."""
    proto = onnx.load(str(source))
    proto.doc_string = "inputs of 8"
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[1].dim_value = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(folder / "model.onnx"))
    (folder / "config.yaml").write_text(config.read_text().replace("[16]", "[8]"))
    return folder / "model.onnx", folder / "config.yaml"


def _variant(source: Path, target: Path, *, broken: bool) -> Path:
    """The same graph with another doc string (a new digest); ``broken``: its first node
    an operator of a domain no runtime registers, so that loading it fails."""
    proto = onnx.load(str(source))
    proto.doc_string = f"variant broken={broken}"
    if broken:
        proto.graph.node[0].op_type = "NoSuchOp"
        proto.graph.node[0].domain = "com.example.missing"
        proto.opset_import.append(helper.make_opsetid("com.example.missing", 1))
    onnx.save(proto, str(target))
    return target


def _ready_versions(fleet: Fleet, node: str) -> set[str]:
    index = httpx.post(
        f"http://127.0.0.1:{fleet.bases[node]}/v2/repository/index", json={}, timeout=5
    ).json()
    return {r["version"] for r in index if r["name"] == "simple" and r.get("state") == "READY"}


def _all_on(fleet: Fleet, version: str) -> bool:
    return all(_ready_versions(fleet, node) == {version} for node in NODES)


def _rollout(runner: CliRunner, env: dict[str, str]) -> dict[str, Any]:
    shown = runner.invoke(app, ["rollout", "status", "simple", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    return dict(json.loads(shown.output))


def _ready(fleet: Fleet) -> bool:
    conditions = fleet.get("/v1/deployments/simple")["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _demo(tmp_path: Path) -> tuple[Path, Path]:
    """The demo model `simple`: its version 1 file and its config."""
    repo = tmp_path / "models"
    build_demo_repository(repo, models=["simple"])
    return repo / "simple" / "1" / "model.onnx", repo / "simple" / "config.yaml"


def _start(fleet: Fleet, nodes: list[str]) -> None:
    fleet.start_controller()
    for name in nodes:
        fleet.start_agent(name)
    _eventually(lambda: len(fleet.get("/v1/nodes")) == len(nodes), "the nodes enrolled")


def test_a_good_version_rolls_through_and_a_bad_one_is_rolled_back(tmp_path: Path) -> None:
    v1, config = _demo(tmp_path)
    fleet = Fleet(tmp_path)
    try:
        _start(fleet, list(NODES))
        env = {"EDGETIER_CONTROLLER": fleet.url, "EDGETIER_TOKEN": fleet.token(), "COLUMNS": "200"}
        runner = CliRunner()
        assert _push(fleet, v1, config) == 1
        assert _push(fleet, _variant(v1, tmp_path / "v2.onnx", broken=False), config) == 2
        assert _push(fleet, _variant(v1, tmp_path / "v3.onnx", broken=True), config) == 3

        _apply(fleet, _deployment(1))
        _eventually(lambda: _all_on(fleet, "1"), "every node serving version 1", 120)
        empty = runner.invoke(app, ["rollout", "status"], env=env)
        assert empty.exit_code == 0 and "no rollouts" in empty.output

        # a good version: three batches of one node, each soaked, then Succeeded
        _apply(fleet, _deployment(2))
        first = _rollout(runner, env)
        assert first["state"] == "Progressing" and first["batches"] == 3
        assert first["nodes_updated"] == 1 and first["nodes_total"] == 3
        paused = runner.invoke(app, ["rollout", "pause", "simple"], env=env)
        assert paused.exit_code == 0 and "Paused" in paused.output, paused.output
        resumed = runner.invoke(app, ["rollout", "resume", "simple"], env=env)
        assert resumed.exit_code == 0 and "Progressing" in resumed.output, resumed.output
        done = _eventually(
            lambda: (r := _rollout(runner, env))["state"] != "Progressing" and r,
            "the rollout of version 2 to finish",
            180,
        )
        assert done["state"] == "Succeeded", done
        assert (done["batch"], done["nodes_updated"]) == (3, 3)
        batches = fleet.get("/v1/events?source=controller&kind=RolloutBatchStarted")
        assert [e["data"]["batch"] for e in batches] == [2, 3]
        _eventually(lambda: _all_on(fleet, "2"), "every node serving version 2", 60)
        assert all(fleet.serves(node) for node in NODES)
        text = runner.invoke(app, ["rollout", "status"], env=env)
        assert "Succeeded" in text.output and "3/3" in text.output

        # a version that fails to load: stopped on batch 1, rolled back by the controller
        _apply(fleet, _deployment(3))
        bad = _rollout(runner, env)
        [canary] = bad["updated_nodes"]
        stopped = _eventually(
            lambda: (r := _rollout(runner, env))["state"] != "Progressing" and r,
            "the rollout of version 3 to stop",
            180,
        )
        assert stopped["state"] == "RolledBack", stopped
        assert stopped["reason"] == "LoadFailed" and stopped["batch"] == 1
        assert canary in stopped["message"] and "version 3" in stopped["message"]
        events = fleet.get("/v1/events?source=controller&kind=RolloutBatchStarted")
        assert len(events) == 2  # none for version 3: it never left batch 1
        told = fleet.get("/v1/events?source=controller&kind=DesiredStateChanged&limit=5000")
        started = fleet.get("/v1/events?source=controller&kind=RolloutStarted")[-1]["id"]
        others = {e["subject"] for e in told if e["id"] > started} - {canary}
        assert others == set()  # only the canary's desired state moved
        # the canary said why, as its Degraded condition, before the controller acted
        canary_events = fleet.get(f"/v1/events?source={canary}&kind=condition&limit=5000")
        degraded = [
            e
            for e in canary_events
            if e["data"]["type"] == "Degraded" and e["data"]["status"] == "True"
        ]
        assert any(e["data"]["reason"] == "LoadFailed" for e in degraded)
        # every node ends on the previous version, serving, and the deployment is Ready
        _eventually(lambda: _all_on(fleet, "2"), "every node back on version 2", 120)
        assert all(fleet.serves(node) for node in NODES)
        _eventually(lambda: _ready(fleet), "the deployment Ready again", 60)
        refused = runner.invoke(app, ["rollout", "undo", "simple"], env=env)
        assert refused.exit_code == 1 and "RolledBack" in refused.output
        assert fleet.get("/v1/deployments/simple/rollout")["state"] == "RolledBack"
    finally:
        fleet.stop_all()


def _traffic(fleet: Fleet, node: str, stop: threading.Event) -> None:
    """Requests of 16 values to the node's model, as its clients send them, until stopped."""
    body = {
        "inputs": [
            {"name": n, "shape": [1, 16], "datatype": "INT32", "data": list(range(16))}
            for n in ("INPUT0", "INPUT1")
        ]
    }
    url = f"http://127.0.0.1:{fleet.bases[node]}/v2/models/simple/infer"
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                http.post(url, json=body)
            stop.wait(0.02)


def test_a_version_whose_requests_fail_is_rolled_back_on_its_error_rate(tmp_path: Path) -> None:
    v1, config = _demo(tmp_path)
    node = "nano-1"
    fleet = Fleet(tmp_path)
    stop = threading.Event()
    sender = threading.Thread(target=_traffic, args=(fleet, node, stop), daemon=True)
    try:
        _start(fleet, [node])
        assert _push(fleet, v1, config) == 1
        assert _push(fleet, *_narrow(v1, config, tmp_path / "v2")) == 2
        body = _deployment(1)
        body["spec"].update(selector={"tiers": ["terminal"]}, replicas=1)
        body["spec"]["rollout"] = {"batches": 1, "soak_s": 600, "min_requests": 10}
        _apply(fleet, body)
        _eventually(lambda: _ready_versions(fleet, node) == {"1"}, "serving version 1", 120)
        sender.start()
        body["spec"]["model"]["version"] = 2
        _apply(fleet, body)
        stopped = _eventually(
            lambda: (
                (r := fleet.get("/v1/deployments/simple/rollout"))["state"] != "Progressing" and r
            ),
            "the rollout of version 2 to stop",
            180,
        )
        assert (stopped["state"], stopped["reason"]) == ("RolledBack", "ErrorRate"), stopped
        assert node in stopped["message"] and "requests failed" in stopped["message"]
        # the figures came from the node: its agent reported the workload Degraded
        reported = fleet.get(f"/v1/events?source={node}&kind=condition&limit=5000")
        assert any(
            e["data"]["type"] == "Degraded" and e["data"]["reason"] == "ErrorRate" for e in reported
        )
        _eventually(lambda: _ready_versions(fleet, node) == {"1"}, "back on version 1", 120)
        _eventually(lambda: fleet.serves(node), "serving version 1 again", 60)
    finally:
        stop.set()
        if sender.is_alive():
            sender.join(10)
        fleet.stop_all()

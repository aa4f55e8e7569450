"""The fleet simulator against a real controller (uvicorn in a thread of the test): a
handful of nodes that enrol, heartbeat, converge on a deployment, overheat, lose their
link and flap, as the controller sees it through its API and its event log."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgetier.cli import app
from edgetier.control import Controller, ControllerSettings
from edgetier.simulate import FleetSimulation, Progress, SimulationSettings
from edgetier.testing import eventually as _eventually
from edgetier.testing import free_port, make_random_classifier

pytestmark = pytest.mark.integration

QUIET = {"overheating": 0.0, "dropped_links": 0.0, "flapping": 0.0}


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[Controller, httpx.Client]]:
    settings = ControllerSettings(
        data_dir=tmp_path / "controller",
        port=free_port(),
        node_timeout_s=1.0,
        heartbeat_interval_s=0.2,
        resync_s=1.0,
    )
    with Controller(settings).running() as running:
        operator = {"Authorization": f"Bearer {running.service.operator_token}"}
        with httpx.Client(base_url=running.url, headers=operator, timeout=30) as client:
            yield running, client


def _deploy(client: httpx.Client, tmp_path: Path, replicas: int) -> None:
    model = make_random_classifier(tmp_path / "classifier.onnx")
    pushed = client.post(
        "/v1/models/classifier/versions", files={"file": ("model.onnx", model.read_bytes())}
    )
    assert pushed.status_code == 201, pushed.text
    body = {
        "apiVersion": "edgetier/v1",
        "kind": "Deployment",
        "metadata": {"name": "fleet"},
        "spec": {"model": {"name": "classifier"}, "replicas": replicas},
    }
    applied = client.put("/v1/deployments/fleet", json=body)
    assert applied.status_code == 201, applied.text


def _settings(controller: Controller, **options: Any) -> SimulationSettings:
    return SimulationSettings(
        **{
            "controllers": [controller.url],
            "operator_token": controller.service.operator_token or "",
            "wait_s": 5.0,
            "thermal_tau_s": 0.3,
            **options,
        }
    )


def _simulate(controller: Controller, **options: Any) -> tuple[Progress, list[Progress]]:
    with _simulating(controller, **options) as (result, seen):
        pass
    return result[0], seen


@contextmanager
def _simulating(
    controller: Controller, **options: Any
) -> Iterator[tuple[list[Progress], list[Progress]]]:
    """Run a simulation in a thread; the block runs beside it, the final snapshot is in
    the first list once the block is left (the simulation has run its duration)."""
    settings = _settings(controller, **options)
    seen: list[Progress] = []
    result: list[Progress] = []

    def run() -> None:
        simulation = FleetSimulation(settings)
        result.append(asyncio.run(simulation.run(progress=seen.append, progress_s=0.5)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield result, seen
    thread.join(settings.duration_s + 30)
    assert result, "the simulation did not end"


def _events(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/v1/events", params={"limit": 5000}).json())


def test_simulated_nodes_enrol_report_and_converge_on_a_deployment(
    controller: tuple[Controller, httpx.Client], tmp_path: Path
) -> None:
    running, client = controller
    options = {"nodes": 4, "duration_s": 6.0, "mix": {"edge": 1.0}, **QUIET}
    with _simulating(running, **options) as (result, seen):
        # placed once all four are in, so that one replica lands on each
        assert _eventually(lambda: len(client.get("/v1/nodes").json()) == 4)
        _deploy(client, tmp_path, replicas=4)
    final = result[0]

    assert final.enrolled == 4 and final.stopped_nodes == 0
    assert final.errors == {}
    assert final.heartbeats > 4 * 5  # at 0.2 s, the controller's interval, for seconds
    assert final.outbox_pending == 0  # flushed at the end: every record stored
    assert seen and all(p.nodes == 4 for p in seen)
    assert "nodes 4/4" in final.line()

    nodes = client.get("/v1/nodes").json()
    assert len(nodes) == 4
    for node in nodes:
        assert node["spec"]["tier"] == "edge"
        assert node["metadata"]["labels"] == {"simulated": "true"}
        assert node["status"]["telemetry"]["simulated"] is True
        assert [w["phase"] for w in node["status"]["workloads"]] == ["Running"]
        # the outbox's telemetry records became the node's telemetry history
        history = client.get(f"/v1/nodes/{node['metadata']['name']}").json()
        assert len(history["telemetry_history"]) >= 5, history["telemetry_history"]
    deployment = client.get("/v1/deployments/fleet").json()
    ready = next(c for c in deployment["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    kinds = Counter(e["kind"] for e in _events(client))
    assert kinds["NodeEnrolled"] == 4
    assert kinds["desired.received"] >= 4 and kinds["workload.running"] == 4
    assert final.downloads == 4  # each node fetched and checked the artifact once


def test_simulated_nodes_go_through_a_rollout_of_a_new_model_version(
    controller: tuple[Controller, httpx.Client], tmp_path: Path
) -> None:
    """A new version of a model the deployment does not pin keeps the deployment's
    generation: the nodes tell the versions apart by the assignment's revision."""
    running, client = controller
    options = {"nodes": 4, "duration_s": 20.0, "mix": {"edge": 1.0}, **QUIET}
    with _simulating(running, **options):
        assert _eventually(lambda: len(client.get("/v1/nodes").json()) == 4)
        _deploy(client, tmp_path, replicas=4)

        def ready() -> bool:
            status = client.get("/v1/deployments/fleet").json()["status"]
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])

        assert _eventually(ready)
        generation = client.get("/v1/deployments/fleet").json()["metadata"]["generation"]
        second = make_random_classifier(tmp_path / "second.onnx", seed=1)
        pushed = client.post(
            "/v1/models/classifier/versions", files={"file": ("model.onnx", second.read_bytes())}
        )
        assert pushed.status_code == 201, pushed.text

        def succeeded() -> bool:
            reply = client.get("/v1/deployments/fleet/rollout")
            return reply.status_code == 200 and reply.json()["state"] == "Succeeded"

        assert _eventually(succeeded), client.get("/v1/deployments/fleet/rollout").text
        deployment = client.get("/v1/deployments/fleet").json()
        assert deployment["metadata"]["generation"] == generation
        rollout = client.get("/v1/deployments/fleet/rollout").json()
        assert rollout["nodes_updated"] == 4


def test_faults_overheating_dropped_links_and_flapping_reach_the_controller(
    controller: tuple[Controller, httpx.Client],
) -> None:
    running, client = controller
    final, _ = _simulate(
        running,
        nodes=4,
        duration_s=8.0,
        mix={"terminal": 1.0, "region": 1.0},
        overheating=0.25,
        dropped_links=0.25,
        flapping=0.25,
        link_down_s=(2.0, 2.5),  # longer than the controller's 1 s node timeout
        flap_s=1.5,
        seed=7,
    )
    assert final.enrolled == 4
    events = _events(client)
    by_kind: dict[str, Counter[str]] = {}
    for event in events:
        by_kind.setdefault(event["kind"], Counter())[event["subject"]] += 1
    # one node's fan failed: the controller saw it throttled (and the node said why)
    assert by_kind.get("NodeThrottled"), sorted(by_kind)
    assert by_kind.get("thermal.throttled")
    # a dropped link and a flapping one: offline, back online; the flapping one repeatedly
    assert by_kind["NodeOffline"] and by_kind["NodeOnline"]
    assert max(by_kind["NodeOffline"].values()) >= 2
    # the nodes noticed, kept their records and delivered them when the link returned
    assert by_kind["controller.unreachable"] and by_kind["controller.reachable"]
    for node in client.get("/v1/nodes").json():
        name = node["metadata"]["name"]
        own = sorted(e["sequence"] for e in events if e["source"] == name)
        assert own, name
    assert final.errors == {}


def test_nodes_move_on_to_the_next_controller_address(
    controller: tuple[Controller, httpx.Client],
) -> None:
    running, client = controller
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    final, _ = _simulate(running, controllers=[dead, running.url], nodes=4, duration_s=3.0, **QUIET)
    # nodes 0 and 2 start at the dead address, 1 and 3 at the live one: all get through
    assert final.enrolled == 4 and final.heartbeats >= 4
    assert len(client.get("/v1/nodes").json()) == 4
    assert final.errors.get("enrol: LinkDown", 0) >= 2


def test_the_command_runs_a_fleet_and_writes_its_report(
    controller: tuple[Controller, httpx.Client], tmp_path: Path
) -> None:
    running, client = controller
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "fleet",
            "simulate",
            "--controller",
            running.url,
            "--nodes",
            "3",
            "--duration-s",
            "3",
            "--progress-s",
            "1",
            "--mix",
            "cloud=1",
            "--overheating",
            "0",
            "--dropped-links",
            "0",
            "--flapping",
            "0",
            "--report",
            str(report),
        ],
        env={"EDGETIER_TOKEN": running.service.operator_token or ""},
    )
    assert result.exit_code == 0, result.output
    assert "done:" in result.output and "nodes 3/3" in result.output
    figures = json.loads(report.read_text())
    assert figures["enrolled"] == 3 and figures["heartbeats"] > 0
    assert {n["spec"]["tier"] for n in client.get("/v1/nodes").json()} == {"cloud"}


def test_the_command_refuses_bad_options_and_a_wrong_token(
    controller: tuple[Controller, httpx.Client],
) -> None:
    running, _ = controller
    runner = CliRunner()
    bad_mix = runner.invoke(
        app, ["fleet", "simulate", "--controller", running.url, "--token", "x", "--mix", "moon=1"]
    )
    assert bad_mix.exit_code == 2
    assert "unknown tier(s) ['moon']" in bad_mix.output
    wrong = runner.invoke(
        app,
        [
            "fleet",
            "simulate",
            "--controller",
            running.url,
            "--token",
            "not-a-token",
            "--duration-s",
            "2",
        ],
    )
    assert wrong.exit_code == 1
    assert "operator token" in wrong.output and "refused" in wrong.output

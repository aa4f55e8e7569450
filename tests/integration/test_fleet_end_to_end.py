"""The fleet end to end on localhost (issue 14, acceptance 1): a controller and three real
agents (`edgetier controller`, `edgetier agent` processes) presenting three profiles in two
tiers. A model deployment lands where the scheduler says and `deploy explain` says why;
the controller is killed and the node goes on serving; the node's agent is restarted while
the controller is down and brings the node back from its store; the controller returns and
every record reaches it once; the node's agent is killed and the deployment is placed on
the other edge node, which serves it. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from edgetier.cli._app import app
from edgetier.synthetic import build_demo_repository
from edgetier.testing import free_port, free_tcp_block, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EDGETIER = [sys.executable, "-c", "from edgetier.cli import main; main()"]
NODE_TIMEOUT_S = 3.0
NODES = {  # name -> (tier, presented profile)
    "xnx-1": ("edge", "jetson-xavier-nx"),
    "orin-1": ("edge", "jetson-agx-orin-64gb"),
    "nano-1": ("terminal", "jetson-nano"),
}


def _eventually(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
        except (httpx.HTTPError, OSError, KeyError, IndexError):
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Fleet:
    """The processes of one test: a controller (or its replicas) and named agents, with
    their logs. ``controllers``: what the agents are given as ``--controller``."""

    def __init__(self, root: Path, database_url: str | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.controllers = self.url
        self.database_url = database_url
        self.data_dir = root / "controller"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.bases: dict[str, int] = {}
        self.tokens: dict[str, str] = {}

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen([*EDGETIER, *args], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = proc
        return proc

    def start_controller(self, name: str = "controller", port: int | None = None) -> None:
        port = port or self.port
        database = ["--database-url", self.database_url] if self.database_url else []
        proc = self._start(
            name,
            ["controller", "--data-dir", str(self.data_dir), "--port", str(port),
             "--node-timeout-s", str(NODE_TIMEOUT_S), *database],
        )  # fmt: skip
        wait_for_port(port, timeout_s=60, alive=lambda: None if proc.poll() is None else "x")
        self.operator = {"Authorization": "Bearer " + self.token()}

    def token(self) -> str:
        return (self.data_dir / "operator-token").read_text().strip()

    def start_agent(self, name: str) -> None:
        tier, profile = NODES[name]
        if name not in self.bases:
            self.bases[name] = free_tcp_block(3)
            created = httpx.post(
                f"{self.url}/v1/tokens", json={"kind": "enrol"}, headers=self.operator
            )
            self.tokens[name] = created.json()["token"]
        self._start(
            f"agent-{name}",
            ["agent", "--controller", self.controllers, "--name", name, "--tier", tier,
             "--profile", profile, "--port-base", str(self.bases[name]),
             "--store", str(self.root / "agents" / name), "--token", self.tokens[name],
             "--heartbeat-s", "0.5"],
        )  # fmt: skip

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(60)

    def stop_all(self) -> None:
        for name in sorted(self.procs, key=lambda n: n.startswith("controller")):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self.procs.clear()

    def get(self, path: str) -> Any:
        answer = httpx.get(f"{self.url}{path}", headers=self.operator, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def serves(self, node: str) -> bool:
        """The node's inference server answers an inference with the right result."""
        client = httpclient.InferenceServerClient(f"127.0.0.1:{self.bases[node]}")
        try:
            a = np.arange(16, dtype=np.int32).reshape(1, 16)
            inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
            for tensor in inputs:
                tensor.set_data_from_numpy(a)
            result = client.infer("simple", inputs)
            return bool((result.as_numpy("OUTPUT0") == 2 * a).all())
        except Exception:
            return False
        finally:
            client.close()


def _placed(fleet: Fleet) -> list[str]:
    deployment = fleet.get("/v1/deployments/simple")
    return [p["node"] for p in deployment["status"]["placements"]]


def _agent_sequence(root: Path, node: str) -> int:
    """The last sequence the node's agent gave a record (read from its store, read-only)."""
    path = root / "agents" / node / "agent.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'last_sequence'").fetchone()
    return int(row[0]) if row else 0


def _events_of(fleet: Fleet, node: str) -> list[dict[str, Any]]:
    """Every event a node's agent delivered, page by page, oldest first."""
    events: list[dict[str, Any]] = []
    after = 0
    while page := fleet.get(f"/v1/events?source={node}&after={after}&limit=5000"):
        events.extend(page)
        after = page[-1]["sequence"]
    return events


def deploy_simple(fleet: Fleet, url: str) -> dict[str, str]:
    """With the CLI, through the controller at ``url``: push the demo model ``simple`` and
    deploy it on one edge node. The CLI's environment."""
    models = fleet.root / "models"
    build_demo_repository(models, models=["simple"])
    env = {"EDGETIER_CONTROLLER": url, "EDGETIER_TOKEN": fleet.token(), "COLUMNS": "200"}
    runner = CliRunner()
    pushed = runner.invoke(
        app, ["model", "push", str(models / "simple"), "--name", "simple"], env=env
    )
    assert pushed.exit_code == 0, pushed.output
    deployment = fleet.root / "simple.yaml"
    deployment.write_text(
        "apiVersion: edgetier/v1\nkind: Deployment\nmetadata: {name: simple}\n"
        "spec: {model: {name: simple}, selector: {tiers: [edge]}, replicas: 1}\n"
    )
    applied = runner.invoke(app, ["deploy", "apply", "-f", str(deployment)], env=env)
    assert applied.exit_code == 0, applied.output
    return env


def test_a_fleet_places_serves_survives_and_moves(tmp_path: Path, database_url: str | None) -> None:
    fleet = Fleet(tmp_path, database_url)
    try:
        fleet.start_controller()
        for name in NODES:
            fleet.start_agent(name)
        _eventually(lambda: len(fleet.get("/v1/nodes")) == 3, "three nodes enrolled")
        env = deploy_simple(fleet, fleet.url)
        runner = CliRunner()

        # it lands where the scheduler says, and explain says why
        explain = runner.invoke(app, ["deploy", "explain", "simple", "--json"], env=env)
        assert explain.exit_code == 0, explain.output
        decision = json.loads(explain.output)
        [first] = _placed(fleet)
        ranked = [n["node"] for n in decision["nodes"] if n["eligible"]]
        assert first == ranked[0] and set(ranked) == {"xnx-1", "orin-1"}
        rejected = {n["node"]: n["rejected"] for n in decision["nodes"] if not n["eligible"]}
        assert list(rejected) == ["nano-1"] and rejected["nano-1"][0].startswith("tier:")
        text = runner.invoke(app, ["deploy", "explain", "simple"], env=env).output
        assert "nano-1" in text and "tier" in text and first in text
        _eventually(lambda: fleet.serves(first), f"{first} serving the model")

        # the controller dies: the node goes on serving
        fleet.kill("controller")
        time.sleep(2 * NODE_TIMEOUT_S)
        assert fleet.serves(first)

        # the node's agent restarts while the controller is down: it brings its node back
        fleet.kill(f"agent-{first}", signal.SIGTERM)
        assert not fleet.serves(first)  # its children stopped with it
        fleet.start_agent(first)
        _eventually(lambda: fleet.serves(first), f"{first} serving again from its store")

        # the controller returns: everything reconciles, every record arrives once
        fleet.start_controller()
        # every record the node made while the controller was away arrives: the controller
        # stores a node's records (events and telemetry samples) without a gap, and has all
        # that the agent had numbered when the link came back
        made = _eventually(lambda: _agent_sequence(tmp_path, first), "records numbered")
        _eventually(
            lambda: fleet.get(f"/v1/nodes/{first}")["status"]["records_acked_through"] >= made,
            "the outbox delivered",
        )
        for node in NODES:
            sequences = [e["sequence"] for e in _events_of(fleet, node)]
            assert sequences == sorted(set(sequences)), node  # each stored once, in order
        assert _placed(fleet) == [first]
        events = _events_of(fleet, first)
        starts = [e for e in events if e["kind"] == "agent.started"]
        assert len(starts) == 2  # the restart during the outage, delivered afterwards
        assert "child.started" in {e["kind"] for e in events}

        # the node disappears: its deployment is placed on the other edge node
        fleet.kill(f"agent-{first}")
        other = next(n for n in ("xnx-1", "orin-1") if n != first)
        _eventually(lambda: _placed(fleet) == [other], f"the deployment moved to {other}")
        node = fleet.get(f"/v1/nodes/{first}")
        offline = [c for c in node["status"]["conditions"] if c["type"] == "Offline"]
        assert offline and offline[0]["status"] == "True"
        _eventually(lambda: fleet.serves(other), f"{other} serving the model")
    finally:
        fleet.stop_all()

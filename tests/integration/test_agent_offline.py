"""Offline autonomy, with `edgetier agent` as a real process: the controller goes away and
the node goes on serving; the agent is stopped (SIGTERM: exit 0, children drained) and
killed (as a crash or a power cut would) while the controller is away, and each time it
brings the node back to its last desired state from its store; when the controller
returns, the outbox arrives whole, in order, each record once."""

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
import pytest
import yaml
from agent_helpers import PROFILE, TOKEN
from fake_controller import FakeController

from edgetier.control import Assignment
from edgetier.synthetic import build_demo_repository
from edgetier.testing import free_tcp_block

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTINGS = {
    "heartbeat_s": 0.2,
    "wait_s": 1.0,
    "request_timeout_s": 2.0,
    "retry_initial_s": 0.05,
    "retry_max_s": 0.3,
    "restart_initial_s": 0.2,
    "restart_max_s": 1.0,
    "resync_s": 0.3,
    "start_settle_s": 1.0,
    "stop_timeout_s": 10.0,
    "max_pipelines": 2,
}
PIPELINE: dict[str, Any] = {
    "name": "tiny",
    "sources": [
        {
            "id": "cam",
            "kind": "synthetic",
            "realtime": True,
            "scene": {"width": 160, "height": 120, "fps": 5, "duration_s": 600},
        }
    ],
    "sinks": [{"kind": "jsonl", "path": "out/events.jsonl"}],
}


def _until(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _serves(port: int) -> bool:
    body = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [3] * 16},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
        ]
    }
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/v2/models/simple/infer", json=body)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json()["outputs"][0]["data"] == [4] * 16


def _closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def _stream_starts(events: Path) -> int:
    if not events.exists():
        return 0
    lines = [json.loads(x) for x in events.read_text().splitlines() if x.strip()]
    return sum(
        1 for e in lines if e["kind"] == "source_status" and e["data"]["status"] == "started"
    )


def _outbox(store: Path) -> tuple[int, int]:
    """(last sequence, acknowledged sequence) from the agent's store, read beside it."""
    db = sqlite3.connect(store / "agent.db", timeout=10)
    try:
        rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    return int(rows.get("last_sequence", 0)), int(rows.get("acked_through", 0))


def _running(fake: FakeController, *deployments: str) -> bool:
    beat = fake.last_heartbeat("edge-1")
    if beat is None:
        return False
    phases = {w.deployment: w.phase for w in beat.workloads}
    return all(phases.get(d) == "Running" for d in deployments)


def test_the_node_serves_through_outages_and_restarts_and_delivers_its_outbox_after(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "demo"
    build_demo_repository(repo, models=["simple"])
    config = yaml.safe_load((repo / "simple" / "config.yaml").read_text())
    store, logs = tmp_path / "store", tmp_path / "agent.log"
    port_base = free_tcp_block(30)
    settings_file = tmp_path / "agent.yaml"
    settings_file.write_text(yaml.safe_dump(SETTINGS))
    fake = FakeController(tokens={TOKEN})
    command = [
        str(Path(sys.executable).with_name("edgetier")),
        "agent",
        "--controller",
        fake.url,
        "--name",
        "edge-1",
        "--token",
        TOKEN,
        "--profile",
        PROFILE,
        "--port-base",
        str(port_base),
        "--store",
        str(store),
        "--config",
        str(settings_file),
    ]
    events = store / "pipelines" / "traffic" / "out" / "events.jsonl"
    procs: list[subprocess.Popen[bytes]] = []

    def start_agent() -> subprocess.Popen[bytes]:
        with logs.open("ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    fake.start()
    try:
        agent = start_agent()
        _until(lambda: fake.last_heartbeat("edge-1"), "enrolment")
        model = fake.add_artifact("simple", 1, (repo / "simple" / "1" / "model.onnx").read_bytes())
        fake.set_desired(
            "edge-1",
            [
                Assignment(
                    deployment="adder", generation=1, kind="model", model=model, config=config
                ),
                Assignment(
                    deployment="traffic",
                    generation=1,
                    kind="pipeline",
                    pipeline=PIPELINE,
                    streams=2,
                ),
            ],
        )
        _until(lambda: _running(fake, "adder", "traffic"), "both workloads Running")
        assert _serves(port_base)

        # the controller goes away: the node goes on serving, the outbox grows
        fake.stop()
        last, _ = _outbox(store)
        _until(lambda: _outbox(store)[0] > last + 10, "records kept while the controller is away")
        assert _serves(port_base)
        assert _stream_starts(events) == 2

        # SIGTERM: the children are stopped (the server drains), exit 0
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        assert _closed(port_base)

        # started again with the controller still away: back to the last desired state
        agent = start_agent()
        _until(lambda: _serves(port_base), "serving again after the restart")
        _until(lambda: _stream_starts(events) == 4, "the pipeline's two streams again")

        # killed outright (a crash, a power cut): its children go with it; on the next
        # start the node comes back again, from the store alone
        agent.kill()
        agent.wait(10)
        _until(lambda: _closed(port_base), "the server gone with its agent", timeout_s=30)
        agent = start_agent()
        _until(lambda: _serves(port_base), "serving after the kill")
        _until(lambda: _stream_starts(events) == 6, "the pipeline after the kill")

        # the controller returns: everything reconciles, the outbox arrives whole
        fake.start()
        _until(lambda: (o := _outbox(store))[1] == o[0], "the outbox delivered", timeout_s=30)
        _until(lambda: _running(fake, "adder", "traffic"), "Running reported again")
        stored = fake.stored("edge-1")
        assert [r.sequence for r in stored] == list(range(1, len(stored) + 1))
        assert fake.duplicates == 0
        kinds = [r.kind for r in stored]
        assert kinds.count("agent.started") == 3 and kinds.count("agent.stopped") == 1
        assert len(fake.enrolments) == 1  # the credential came from the store every time
        assert fake.downloads.count(model.digest) == 1  # and the model too

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        fake.stop()
        print(logs.read_text()[-4000:] if logs.exists() else "")

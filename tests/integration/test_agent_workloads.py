"""The agent reconciles real workloads: a model served by a real `edgetier serve` child
(downloaded, verified, loaded through the repository API, answering an inference over
HTTP, swapped to a new version, unloaded when removed), a real `edgetier pipeline run`
child with the stream count applied, and crashed children restarted with back-off."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
import yaml
from agent_helpers import TOKEN, eventually, running_agent, settings_for
from fake_controller import FakeController

from edgetier.agent import Agent
from edgetier.control import Assignment, Heartbeat, WorkloadState
from edgetier.synthetic import build_demo_repository

pytestmark = pytest.mark.integration

TINY_PIPELINE: dict[str, Any] = {
    "name": "tiny",
    "sources": [
        {
            "id": "cam",
            "kind": "synthetic",
            "count": 1,
            "realtime": True,
            "scene": {"width": 160, "height": 120, "fps": 5, "duration_s": 600},
        }
    ],
    "sinks": [
        {"kind": "jsonl", "path": "out/events.jsonl"},
        {"kind": "prometheus", "port": 9108},
    ],
}


@pytest.fixture(scope="module")
def simple_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, Any]]:
    """The demo `simple` model (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1)."""
    repo = tmp_path_factory.mktemp("demo")
    build_demo_repository(repo, models=["simple"])
    config = yaml.safe_load((repo / "simple" / "config.yaml").read_text())
    return (repo / "simple" / "1" / "model.onnx").read_bytes(), config


def _other_bytes(model: bytes) -> bytes:
    """The same graph with another doc string: a new version with its own digest."""
    proto = onnx.load_from_string(model)
    proto.doc_string = "version 2"
    return proto.SerializeToString()


def _workload(beat: Heartbeat | None, deployment: str) -> WorkloadState | None:
    if beat is None:
        return None
    return next((w for w in beat.workloads if w.deployment == deployment), None)


def _phase(fake: FakeController, deployment: str, phase: str, generation: int = 1) -> bool:
    w = _workload(fake.last_heartbeat("edge-1"), deployment)
    return w is not None and w.phase == phase and w.generation == generation


def _infer(port: int) -> dict[str, list[int]]:
    a, b = list(range(16)), [2] * 16
    body = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": b},
        ]
    }
    response = httpx.post(f"http://127.0.0.1:{port}/v2/models/simple/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def _reasons(fake: FakeController, deployment: str) -> list[str]:
    return [
        r.data["reason"]
        for r in fake.stored("edge-1")
        if r.kind == "condition" and r.subject == deployment
    ]


async def test_a_model_is_served_swapped_and_unloaded_and_a_crashed_server_restarted(
    tmp_path: Path, simple_model: tuple[bytes, dict[str, Any]]
) -> None:
    model, config = simple_model
    with FakeController(tokens={TOKEN}) as fake:
        settings = settings_for(fake.url, tmp_path / "s")
        port, store = settings.http_port, tmp_path / "s"
        v1 = fake.add_artifact("simple", 1, model)
        async with running_agent(settings) as agent:
            await eventually(lambda: fake.last_heartbeat("edge-1"), what="enrolment")
            fake.set_desired(
                "edge-1",
                [
                    Assignment(
                        deployment="adder", generation=1, kind="model", model=v1, config=config
                    )
                ],
            )
            await eventually(lambda: _phase(fake, "adder", "Running"), what="adder Running")
            outputs = _infer(port)
            assert outputs["OUTPUT0"] == [i + 2 for i in range(16)]
            assert outputs["OUTPUT1"] == [i - 2 for i in range(16)]
            assert (store / "models" / "simple" / "1" / "model.onnx").read_bytes() == model
            written = yaml.safe_load((store / "models" / "simple" / "config.yaml").read_text())
            assert written["version_policy"] == {"specific": {"versions": [1]}}
            state = _workload(fake.last_heartbeat("edge-1"), "adder")
            assert state is not None and state.endpoint == f"127.0.0.1:{port}"
            reasons = _reasons(fake, "adder")
            for step in ("Downloading", "Downloaded", "Installed", "ServerStarting", "Loaded"):
                assert step in reasons, (step, reasons)

            # the server dies: restarted (after its back-off), the model loaded again
            assert agent.reconciler is not None and agent.reconciler.server is not None
            os.kill(agent.reconciler.server.pid or 0, signal.SIGKILL)
            await eventually(
                lambda: any(
                    r.kind == "child.exited" and r.subject == "serve" for r in fake.stored("edge-1")
                ),
                what="the crash reported",
            )
            await eventually(
                lambda: len([r for r in fake.stored("edge-1") if r.kind == "model.loaded"]) == 2,
                what="the model loaded into the new server",
            )
            assert _infer(port)["OUTPUT0"] == [i + 2 for i in range(16)]

            # a new version: downloaded, loaded in place of the old one, old files removed
            v2 = fake.add_artifact("simple", 2, _other_bytes(model))
            fake.set_desired(
                "edge-1",
                [
                    Assignment(
                        deployment="adder", generation=2, kind="model", model=v2, config=config
                    )
                ],
            )
            await eventually(lambda: _phase(fake, "adder", "Running", 2), what="version 2")
            ready = httpx.get(f"http://127.0.0.1:{port}/v2/models/simple/versions/2/ready")
            assert ready.status_code == 200
            old = httpx.get(f"http://127.0.0.1:{port}/v2/models/simple/versions/1/ready")
            assert old.status_code != 200
            await eventually(
                lambda: not (store / "models" / "simple" / "1").exists(), what="v1 removed"
            )

            # removed from the desired state: unloaded, its files gone, the server stopped
            fake.set_desired("edge-1", [])
            await eventually(
                lambda: any(r.kind == "model.unloaded" for r in fake.stored("edge-1")),
                what="the unload",
            )
            await eventually(
                lambda: (h := fake.last_heartbeat("edge-1")) and not h.workloads,
                what="no workload",
            )
            await eventually(
                lambda: not (store / "models" / "simple").exists(), what="files removed"
            )
            await eventually(lambda: agent.reconciler.server is None, what="server stopped")
        assert fake.downloads.count(v1.digest) == 1  # the restart reloaded from the store


async def test_a_damaged_artifact_is_refused_then_fetched_again(
    tmp_path: Path, simple_model: tuple[bytes, dict[str, Any]]
) -> None:
    model, config = simple_model
    with FakeController(tokens={TOKEN}) as fake:
        settings = settings_for(fake.url, tmp_path / "s")
        v1 = fake.add_artifact("simple", 1, model)
        fake.corrupt.add(v1.digest)
        async with running_agent(settings):
            await eventually(lambda: fake.last_heartbeat("edge-1"), what="enrolment")
            fake.set_desired(
                "edge-1",
                [
                    Assignment(
                        deployment="adder", generation=1, kind="model", model=v1, config=config
                    )
                ],
            )
            await eventually(lambda: _phase(fake, "adder", "Failed"), what="Failed")
            state = _workload(fake.last_heartbeat("edge-1"), "adder")
            assert state is not None
            degraded = next(c for c in state.conditions if c.type == "Degraded")
            assert degraded.reason == "DigestMismatch" and "sha256:" in degraded.message
            assert not (tmp_path / "s" / "models" / "simple" / "1" / "model.onnx").exists()
            fake.corrupt.clear()  # the controller sends the right bytes: the agent recovers
            await eventually(lambda: _phase(fake, "adder", "Running"), what="Running")
            assert _infer(settings.http_port)["OUTPUT1"] == [i - 2 for i in range(16)]


async def test_a_pipeline_runs_with_its_streams_and_ports_from_the_store(tmp_path: Path) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        settings = settings_for(fake.url, tmp_path / "s")
        async with running_agent(settings) as agent:
            await eventually(lambda: fake.last_heartbeat("edge-1"), what="enrolment")
            fake.set_desired(
                "edge-1",
                [
                    Assignment(
                        deployment="traffic",
                        generation=1,
                        kind="pipeline",
                        pipeline=TINY_PIPELINE,
                        streams=3,
                    )
                ],
            )
            await eventually(lambda: _phase(fake, "traffic", "Running"), what="Running")
            workdir = tmp_path / "s" / "pipelines" / "traffic"
            written = yaml.safe_load((workdir / "pipeline.yaml").read_text())
            assert written["sources"][0]["count"] == 3
            assert written["node"] == "edge-1"
            metrics_port = settings.slot_ports(1)[0]
            assert written["sinks"][1]["port"] == metrics_port  # never 9108 for every agent
            events = workdir / "out" / "events.jsonl"

            def starts() -> list[str]:
                if not events.exists():
                    return []
                lines = [json.loads(x) for x in events.read_text().splitlines() if x]
                return [
                    e["stream"]
                    for e in lines
                    if e["kind"] == "source_status" and e["data"]["status"] == "started"
                ]

            assert await eventually(lambda: sorted(starts()) == ["cam-0", "cam-1", "cam-2"])
            first = json.loads(events.read_text().splitlines()[0])
            assert first["node"] == "edge-1"
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
            assert metrics.status_code == 200 and "cam-2" in metrics.text
            state = _workload(fake.last_heartbeat("edge-1"), "traffic")
            assert state is not None and str(metrics_port) in (state.endpoint or "")

            # two streams instead of three: the file is rewritten and the child restarted
            assert agent.reconciler is not None
            first_pid = agent.reconciler.pipelines["traffic"].pid
            fake.set_desired(
                "edge-1",
                [
                    Assignment(
                        deployment="traffic",
                        generation=2,
                        kind="pipeline",
                        pipeline=TINY_PIPELINE,
                        streams=2,
                    )
                ],
            )
            await eventually(lambda: _phase(fake, "traffic", "Running", 2), what="generation 2")
            written = yaml.safe_load((workdir / "pipeline.yaml").read_text())
            assert written["sources"][0]["count"] == 2
            assert agent.reconciler.pipelines["traffic"].pid != first_pid
            await eventually(lambda: len(starts()) == 5, what="the two streams started")

            fake.set_desired("edge-1", [])
            await eventually(lambda: not agent.reconciler.pipelines, what="pipeline stopped")
            await eventually(
                lambda: (h := fake.last_heartbeat("edge-1")) and not h.workloads,
                what="no workload",
            )
            assert not (workdir / "pipeline.yaml").exists()
        stopped = [r for r in fake.stored("edge-1") if r.kind == "child.stopped"]
        assert stopped and stopped[-1].data["exit_code"] == 0  # stopped cleanly, by SIGTERM


async def test_a_crashing_pipeline_is_restarted_with_back_off_then_reported_failed(
    tmp_path: Path,
) -> None:
    broken = {
        **TINY_PIPELINE,
        "stages": [{"id": "detect", "kind": "detector", "model": "missing.onnx"}],
    }
    with FakeController(tokens={TOKEN}) as fake:
        async with running_agent(settings_for(fake.url, tmp_path / "s")) as agent:
            await eventually(lambda: fake.last_heartbeat("edge-1"), what="enrolment")
            fake.set_desired(
                "edge-1",
                [Assignment(deployment="bad", generation=1, kind="pipeline", pipeline=broken)],
            )
            await eventually(lambda: _phase(fake, "bad", "Failed"), what="Failed", timeout_s=60)
            state = _workload(fake.last_heartbeat("edge-1"), "bad")
            assert state is not None
            ready = next(c for c in state.conditions if c.type == "Ready")
            assert ready.reason == "ChildExited" and "missing.onnx" in ready.message
            exits = [r.data for r in fake.stored("edge-1") if r.kind == "child.exited"]
            assert all(e["exit_code"] != 0 and "missing.onnx" in e["log"] for e in exits)
            # each try waits twice as long as the one before, up to restart_max_s
            assert [(e["try"], e["next_s"]) for e in exits[:3]] == [(1, 0.2), (2, 0.4), (3, 0.8)]
            # and it goes on trying at the longest back-off
            starts = len([r for r in fake.stored("edge-1") if r.kind == "child.started"])
            await eventually(
                lambda: (
                    len([r for r in fake.stored("edge-1") if r.kind == "child.started"]) > starts
                ),
                what="another try",
                timeout_s=30,
            )
            assert isinstance(agent, Agent)

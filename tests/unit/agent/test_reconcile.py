"""Reconcile steps with stand-in children (a Python that sleeps stands for `edgetier`):
one step per pass, a condition with a reason after each, idempotent once converged, and
what is no longer desired stopped."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import psutil
import yaml

from edgetier.agent import AgentSettings, AgentStore
from edgetier.agent._reconcile import Reconciler
from edgetier.control import Assignment, DesiredState, ModelVersionInfo

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)", "--"]
MODEL = b"not really onnx, the pipeline never runs"
INFO = ModelVersionInfo(
    model="detector",
    version=2,
    digest="sha256:" + hashlib.sha256(MODEL).hexdigest(),
    size_bytes=len(MODEL),
)
PIPELINE = {
    "name": "traffic",
    "sources": [{"id": "road", "kind": "synthetic"}],
    "stages": [{"id": "detect", "kind": "detector", "model": "package://detector"}],
}


def _reconciler(tmp_path: Path, records: list[tuple[str, str, dict[str, Any]]]) -> Reconciler:
    settings = AgentSettings(
        controller="http://127.0.0.1:9",
        name="edge-1",
        store=tmp_path / "s",
        edgetier=SLEEPER,
        start_settle_s=0.01,
        stop_timeout_s=5,
    )

    async def download(digest: str, target: Path) -> int:
        assert digest == INFO.digest
        target.write_bytes(MODEL)
        return len(MODEL)

    store = AgentStore(settings.store_dir)
    return Reconciler(
        settings,
        store,
        "edge-1",
        download=download,
        record=lambda kind, subject, data: records.append((kind, subject, data)),
    )


async def _converge(reconciler: Reconciler, desired: DesiredState | None) -> int:
    steps = 0
    while await reconciler.step(desired):
        steps += 1
        assert steps < 50, "reconcile does not converge"
    return steps


async def test_a_pipeline_with_a_model_is_fetched_configured_started_and_stopped(
    tmp_path: Path,
) -> None:
    records: list[tuple[str, str, dict[str, Any]]] = []
    reconciler = _reconciler(tmp_path, records)
    desired = DesiredState(
        node="edge-1",
        generation=1,
        assignments=[
            Assignment(
                deployment="traffic",
                generation=1,
                kind="pipeline",
                model=INFO,
                pipeline=PIPELINE,
                streams=3,
            )
        ],
    )
    try:
        assert await _converge(reconciler, desired) == 3  # download, configure, start
        await asyncio.sleep(0.05)  # start_settle_s: alive this long, the pipeline is Running
        assert await reconciler.step(desired) is False
        reasons = [d["reason"] for k, s, d in records if k == "condition" and s == "traffic"]
        assert reasons[:1] == ["Pending"]
        for reason in ("Accepted", "Downloading", "Downloaded", "Configured", "Started"):
            assert reason in reasons, reasons
        [state] = reconciler.workload_states()
        assert state.phase == "Running" and state.generation == 1
        model = tmp_path / "s" / "models" / "detector" / "2" / "model.onnx"
        assert model.read_bytes() == MODEL
        # the shipped model's class names go with the downloaded file
        assert yaml.safe_load(model.with_suffix(".yaml").read_text())["names"][0] == "vehicle"
        written = yaml.safe_load(
            (tmp_path / "s" / "pipelines" / "traffic" / "pipeline.yaml").read_text()
        )
        assert written["stages"][0]["model"] == str(model)
        assert written["sources"][0]["count"] == 3
        child = reconciler.pipelines["traffic"]
        assert child.running and "pipeline" in child.argv and "run" in child.argv
        # converged: another pass takes no step and changes nothing
        before = len(records)
        assert await reconciler.step(desired) is False
        assert len(records) == before and reconciler.pipelines["traffic"] is child

        # no longer desired: stopped, its slot and file released, the workload Stopped
        empty = DesiredState(node="edge-1", generation=2)
        await _converge(reconciler, empty)
        assert not reconciler.pipelines and not child.running
        assert not (tmp_path / "s" / "pipelines" / "traffic" / "pipeline.yaml").exists()
        assert not model.exists()
        assert reconciler.store.slots() == {} and reconciler.workload_states() == []
        phases = [d["phase"] for k, s, d in records if k == "phase" and s == "traffic"]
        assert phases[-1] == "Stopped"
    finally:
        await reconciler.close()
        reconciler.store.close()


async def test_children_left_by_a_killed_agent_are_stopped_on_the_next_start(
    tmp_path: Path,
) -> None:
    records: list[tuple[str, str, dict[str, Any]]] = []
    first = _reconciler(tmp_path, records)
    desired = DesiredState(
        node="edge-1",
        generation=1,
        assignments=[Assignment(deployment="p", generation=1, kind="pipeline", pipeline=PIPELINE)],
    )
    await _converge(first, desired)
    pid = first.pipelines["p"].pid
    assert pid is not None
    first.store.close()  # the agent dies without stopping its child
    second = _reconciler(tmp_path, records)
    try:
        assert second.stop_stale_children() == ["pipeline-p"]
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        await _converge(second, desired)  # and started again from the store
        assert second.pipelines["p"].running and second.pipelines["p"].pid != pid
    finally:
        await second.close()
        second.store.close()
        await first._api.aclose()


async def test_an_assignment_that_cannot_run_is_failed_and_touches_nothing(
    tmp_path: Path,
) -> None:
    records: list[tuple[str, str, dict[str, Any]]] = []
    reconciler = _reconciler(tmp_path, records)
    desired = DesiredState(
        node="edge-1",
        generation=1,
        assignments=[
            Assignment(deployment="../escape", generation=1, kind="pipeline", pipeline=PIPELINE),
            Assignment(deployment="no-model", generation=1, kind="model"),
        ],
    )
    try:
        assert await _converge(reconciler, desired) == 0
        states = {s.deployment: s for s in reconciler.workload_states()}
        for name, why in (("../escape", "not a DNS label"), ("no-model", "without its model")):
            assert states[name].phase == "Failed"
            degraded = next(c for c in states[name].conditions if c.type == "Degraded")
            assert degraded.reason == "InvalidAssignment" and why in degraded.message
        assert not reconciler.pipelines and reconciler.server is None
        assert not (tmp_path / "escape").exists()
        assert not any((tmp_path / "s" / "pipelines").iterdir())
    finally:
        await reconciler.close()
        reconciler.store.close()

"""Reconcile steps with stand-in children (a Python that sleeps stands for `edgetier`):
one step per pass, a condition with a reason after each, idempotent once converged, and
what is no longer desired stopped."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


Records = list[tuple[str, str, dict[str, Any]]]


def _reconciler(tmp_path: Path, records: Records, **options: Any) -> Reconciler:
    """A reconciler whose children are SLEEPER (``options``: other agent settings)."""
    values: dict[str, Any] = {"edgetier": SLEEPER, "start_settle_s": 0.01, "stop_timeout_s": 5}
    settings = AgentSettings(
        controller="http://127.0.0.1:9",
        name="edge-1",
        store=tmp_path / "s",
        **{**values, **options},
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


@asynccontextmanager
async def _reconciling(
    tmp_path: Path, records: Records, **options: Any
) -> AsyncIterator[Reconciler]:
    """:func:`_reconciler`, its children stopped and its store closed on exit."""
    reconciler = _reconciler(tmp_path, records, **options)
    try:
        yield reconciler
    finally:
        await reconciler.close()
        reconciler.store.close()


def _desired(*assignments: Assignment, generation: int = 1) -> DesiredState:
    return DesiredState(node="edge-1", generation=generation, assignments=list(assignments))


def _pipeline(deployment: str, **fields: Any) -> Assignment:
    return Assignment(
        deployment=deployment, generation=1, kind="pipeline", pipeline=PIPELINE, **fields
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
    records: Records = []
    desired = _desired(_pipeline("traffic", model=INFO, streams=3))
    async with _reconciling(tmp_path, records) as reconciler:
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
        await _converge(reconciler, _desired(generation=2))
        assert not reconciler.pipelines and not child.running
        assert not (tmp_path / "s" / "pipelines" / "traffic" / "pipeline.yaml").exists()
        assert not model.exists()
        assert reconciler.store.slots() == {} and reconciler.workload_states() == []
        phases = [d["phase"] for k, s, d in records if k == "phase" and s == "traffic"]
        assert phases[-1] == "Stopped"


async def test_children_left_by_a_killed_agent_are_stopped_on_the_next_start(
    tmp_path: Path,
) -> None:
    records: Records = []
    first = _reconciler(tmp_path, records)
    desired = _desired(_pipeline("p"))
    await _converge(first, desired)
    pid = first.pipelines["p"].pid
    assert pid is not None
    first.store.close()  # the agent dies without stopping its child
    try:
        async with _reconciling(tmp_path, records) as second:
            assert second.stop_stale_children() == ["pipeline-p"]
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
            await _converge(second, desired)  # and started again from the store
            assert second.pipelines["p"].running and second.pipelines["p"].pid != pid
    finally:
        await first._api.aclose()


async def test_an_assignment_that_cannot_run_is_failed_and_touches_nothing(
    tmp_path: Path,
) -> None:
    records: Records = []
    desired = _desired(
        _pipeline("../escape"), Assignment(deployment="no-model", generation=1, kind="model")
    )
    async with _reconciling(tmp_path, records) as reconciler:
        assert await _converge(reconciler, desired) == 0
        states = {s.deployment: s for s in reconciler.workload_states()}
        for name, why in (("../escape", "not a DNS label"), ("no-model", "without its model")):
            assert states[name].phase == "Failed"
            degraded = next(c for c in states[name].conditions if c.type == "Degraded")
            assert degraded.reason == "InvalidAssignment" and why in degraded.message
        assert not reconciler.pipelines and reconciler.server is None
        assert not (tmp_path / "escape").exists()
        assert not any((tmp_path / "s" / "pipelines").iterdir())


async def test_a_child_that_ran_healthy_after_s_before_it_ended_starts_its_back_off_afresh(
    tmp_path: Path,
) -> None:
    records: Records = []
    runs_a_while = [sys.executable, "-c", "import time; time.sleep(0.5)", "--"]
    options = {"edgetier": runs_a_while, "healthy_after_s": 0.2, "restart_initial_s": 0.05}
    desired = _desired(_pipeline("p"))
    async with _reconciling(tmp_path, records, **options) as reconciler:
        for _ in range(2):
            await _converge(reconciler, desired)  # started (again, once its back-off passed)
            child = reconciler.pipelines["p"]
            assert child.running
            while child.running:  # no pass while it runs: only its end tells how long it ran
                await asyncio.sleep(0.05)
            assert await reconciler.step(desired)  # its end, counted as a failed try
            await asyncio.sleep(0.1)
        tries = [d["try"] for k, s, d in records if k == "child.exited" and s == "pipeline-p"]
        assert tries == [1, 1]  # it ran 0.5 s > healthy_after_s each time: try 1 again

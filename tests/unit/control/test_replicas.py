"""Replicas of the controller on one PostgreSQL: leadership through the advisory lock,
``/healthz`` saying which replica leads, change notices that wake long polls parked on
another replica, and a follower's reconcile requests reaching the leader."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Clock, SpreadPolicy, tiny_onnx

from edgetier.control import ControllerSettings, ControlService, EnrolRequest, Heartbeat, create_app
from edgetier.testing import PostgresCluster


def _eventually(check: Callable[[], object], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def replicas(
    tmp_path: Path, clock: Clock, postgres_url: str
) -> Iterator[tuple[ControlService, ControlService]]:
    """Two replicas on one database (a shared data dir, as replicas share their artifacts)."""
    services = []
    for _ in range(2):
        settings = ControllerSettings(
            data_dir=tmp_path / "controller", node_timeout_s=15, database_url=postgres_url
        )
        service = ControlService(settings, clock=clock, policy=SpreadPolicy())
        service.start()
        services.append(service)
    a, b = services
    assert a.pg_notices is not None and b.pg_notices is not None
    assert a.pg_notices.listening.wait(10) and b.pg_notices.listening.wait(10)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _healthz(service: ControlService) -> dict[str, str]:
    async def get() -> dict[str, str]:
        transport = httpx.ASGITransport(app=create_app(service, run_loop=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            return dict((await client.get("/healthz")).json())

    return asyncio.run(get())


def test_sqlite_has_one_replica_and_it_leads(tmp_path: Path) -> None:
    service = ControlService(ControllerSettings(data_dir=tmp_path / "controller"))
    service.start()
    try:
        assert service.pg_notices is None
        assert service.leadership.poll() and service.is_leader
        assert _healthz(service)["role"] == "leader"
    finally:
        service.close()


def test_one_replica_leads_and_another_takes_over_when_its_session_ends(
    replicas: tuple[ControlService, ControlService], postgres: PostgresCluster
) -> None:
    a, b = replicas
    assert not a.is_leader and not b.is_leader  # nobody leads before the loop's first try
    assert a.leadership.poll() is True
    assert b.leadership.poll() is False and b.leadership.poll() is False
    assert a.leadership.poll() is True  # the holder checks it still holds it
    health_a, health_b = _healthz(a), _healthz(b)
    assert (health_a["role"], health_b["role"]) == ("leader", "follower")
    assert health_a["replica"] == a.replica != health_b["replica"] == b.replica
    assert "edgetier_controller_leader 1.0" in a.metrics.render().decode()
    assert "edgetier_controller_leader 0.0" in b.metrics.render().decode()

    # the leader's lock session ends (its connection cut): it steps down on its next
    # check, and the other takes the lock on its next try
    ended = postgres.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        f"edgetier-controller {a.replica} leadership",
    )
    assert ended == [(True,)]
    assert _eventually(lambda: not a.leadership.poll())
    assert _eventually(b.leadership.poll)  # once PostgreSQL has ended a's session
    assert a.leadership.poll() is False  # it reconnects, but the lock is b's now
    assert (_healthz(a)["role"], _healthz(b)["role"]) == ("follower", "leader")

    # a replica that shuts down hands over: its session ends, the lock is free
    b.leadership.release()
    assert not b.is_leader
    assert _eventually(a.leadership.poll)


@contextlib.asynccontextmanager
async def _parked_on(
    enrolling: ControlService, parking: ControlService
) -> AsyncIterator[tuple[asyncio.Task[httpx.Response], str]]:
    """A node enrolled through one replica whose desired-state long poll (up to 60 s) is
    parked on another: (the poll, the ETag it holds). Only a wake answers it 200 sooner."""
    token = enrolling.create_token("enrol", expires_in_s=None)["token"]
    enrolled = enrolling.enrol(
        EnrolRequest(token=token, name="edge-1", tier="edge", profile="jetson-xavier-nx")
    )
    headers = {"Authorization": f"Bearer {enrolled.credential}"}
    parking.notifier.bind(asyncio.get_running_loop())
    transport = httpx.ASGITransport(app=create_app(parking, run_loop=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
        etag = (await client.get("/v1/nodes/edge-1/desired", headers=headers)).headers["ETag"]
        poll = asyncio.create_task(
            client.get(
                "/v1/nodes/edge-1/desired",
                params={"wait_s": 60},
                headers={**headers, "If-None-Match": etag},
            )
        )
        await asyncio.sleep(0.2)
        assert not poll.done() and parking.notifier.waiting == 1
        yield poll, etag


async def test_a_long_poll_parked_on_one_replica_wakes_on_a_change_made_on_another(
    replicas: tuple[ControlService, ControlService], tmp_path: Path
) -> None:
    a, b = replicas
    async with _parked_on(a, b) as (poll, etag):
        await asyncio.to_thread(_push_and_apply, a, tmp_path)
        answer = await asyncio.wait_for(poll, 30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["ETag"] != etag
    assert [x["deployment"] for x in answer.json()["assignments"]] == ["m"]


async def test_a_replica_that_listens_again_wakes_polls_whose_notice_it_missed(
    replicas: tuple[ControlService, ControlService], tmp_path: Path
) -> None:
    """b stops listening; a change is made on a (its notice reaches nobody on b); when b
    listens again it compares its parked polls with the database and wakes them."""
    a, b = replicas
    assert b.pg_notices is not None
    async with _parked_on(a, b) as (poll, etag):
        await asyncio.to_thread(b.pg_notices.stop)
        await asyncio.to_thread(_push_and_apply, a, tmp_path)
        await asyncio.sleep(0.5)
        assert not poll.done()  # nothing told b
        b.pg_notices.start()
        answer = await asyncio.wait_for(poll, 30)
    assert answer.status_code == 200 and answer.headers["ETag"] != etag


def _push_and_apply(service: ControlService, tmp_path: Path) -> None:
    with tiny_onnx(tmp_path / "m.onnx").open("rb") as model:
        service.push_model("detector", model, "model.onnx")
    body = {
        "apiVersion": "edgetier/v1",
        "kind": "Deployment",
        "metadata": {"name": "m"},
        "spec": {"model": {"name": "detector"}},
    }
    service.apply("m", body)


def test_a_follower_hands_reconcile_requests_to_the_leader(
    replicas: tuple[ControlService, ControlService], tmp_path: Path, clock: Clock
) -> None:
    """A node back online heartbeats to the follower: the leader, whose loop runs the
    passes, is asked to place the deployments still unsatisfied."""
    a, b = replicas
    assert a.leadership.poll() and not b.leadership.poll()
    token = a.create_token("enrol", expires_in_s=None)["token"]
    a.enrol(EnrolRequest(token=token, name="edge-1", tier="edge", profile="jetson-xavier-nx"))
    _push_and_apply(a, tmp_path)
    clock.advance(60)
    assert a.check_timeouts() == ["edge-1"]  # lost: "m" has nowhere to go
    a.pending.take()
    b.pending.take()
    b.heartbeat("edge-1", Heartbeat())  # back, through the follower
    asked: set[str] = set()

    def leader_was_asked() -> bool:
        names = a.pending.take()
        assert names is not None
        asked.update(names)
        return "m" in asked

    assert _eventually(leader_was_asked)
    a.reconcile(asked)
    assert [p["node"] for p in a.get_deployment("m")["status"]["placements"]] == ["edge-1"]


def test_a_change_to_many_nodes_is_split_into_notices_postgresql_accepts() -> None:
    import json

    from edgetier.control._pgnotify import _chunks

    generations = {f"node-{i:05d}": 1000 + i for i in range(5000)}
    chunks = list(_chunks(generations))
    assert len(chunks) > 1
    assert all(len(json.dumps({"r": "x" * 40, "d": c})) < 8000 for c in chunks)
    assert {k: v for c in chunks for k, v in c.items()} == generations


def test_postgresql_urls_get_psycopg_3() -> None:
    from edgetier.control._db import driver_url, libpq_conninfo

    url = "postgresql://u:p%40ss@db:5433/fleet"
    assert driver_url(url) == "postgresql+psycopg://u:p%40ss@db:5433/fleet"
    assert driver_url("postgresql+psycopg://u@db/f") == "postgresql+psycopg://u@db/f"
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"
    assert libpq_conninfo(driver_url(url)) == url


async def test_only_the_leader_runs_the_loop_passes(
    replicas: tuple[ControlService, ControlService], clock: Clock
) -> None:
    """b's loop runs while a leads: a silent node stays as it is. Once a steps down, b's
    loop takes the lead and its heartbeat-timeout pass marks the node Offline."""
    from edgetier.control._loop import run_loop

    a, b = replicas
    assert a.leadership.poll()
    token = a.create_token("enrol", expires_in_s=None)["token"]
    a.enrol(EnrolRequest(token=token, name="edge-1", tier="edge", profile="jetson-xavier-nx"))
    clock.advance(60)  # silent for four node timeouts

    def offline() -> bool:
        conditions = b.get_node("edge-1")["status"]["conditions"]
        return {c["type"]: c["status"] for c in conditions}["Offline"] == "True"

    stop = asyncio.Event()
    loop = asyncio.create_task(run_loop(b, stop))
    try:
        await asyncio.sleep(2.5)  # two or three of b's ticks (1 s each)
        assert not b.is_leader
        assert not await asyncio.to_thread(offline)
        a.leadership.release()
        assert await asyncio.to_thread(_eventually, lambda: b.is_leader and offline())
    finally:
        stop.set()
        await loop

"""Two controller replicas on one PostgreSQL (issue 15, acceptance 2): two `edgetier
controller` processes share a database (and a data dir, for their artifacts); three real
agents are given both addresses. The replica that leads is killed with SIGKILL: the other
takes the lead (``/healthz`` says so) within a bound stated here, the agents fail over
to it, and it schedules: the node holding the deployment is lost, the new leader marks it
Offline and places the deployment on the other edge node, whose agent gets that new
desired state through the surviving replica and serves the model.

The bound asserted is generous (a loaded CI machine); what the handover takes is printed
and stated in docs/control.md: the lock is free the moment PostgreSQL sees the killed
session end, and the follower tries it once per loop tick (at most a second)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from test_fleet_end_to_end import NODES, Fleet, _eventually, _placed, deploy_simple

from edgetier.testing import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HANDOVER_BOUND_S = 15.0
"""What the test allows from SIGKILL to the other replica leading (measured: about 1 s)."""


def _role(url: str) -> str | None:
    try:
        return str(httpx.get(f"{url}/healthz", timeout=5).json()["role"])
    except (httpx.HTTPError, OSError, ValueError, KeyError):
        return None


def test_killing_the_leader_hands_scheduling_to_the_other_replica(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = Fleet(tmp_path, postgres_url)
    a, b = fleet.url, f"http://127.0.0.1:{free_port()}"
    try:
        fleet.start_controller("controller-a")
        _eventually(lambda: _role(a) == "leader", "replica a leading")
        fleet.start_controller("controller-b", int(b.rsplit(":", 1)[1]))
        _eventually(lambda: _role(b) == "follower", "replica b following")
        time.sleep(1.5)  # a few of b's loop ticks: it stays a follower while a leads
        assert (_role(a), _role(b)) == ("leader", "follower")

        fleet.controllers = f"{a},{b}"  # every agent starts on a
        for name in NODES:
            fleet.start_agent(name)
        _eventually(lambda: len(fleet.get("/v1/nodes")) == 3, "three nodes enrolled")
        deploy_simple(fleet, b)  # the operator works through the follower: it serves the API
        [first] = _placed(fleet)
        # the holder's long poll is parked on a; the change was made on b
        _eventually(lambda: fleet.serves(first), f"{first} serving the model")

        # the leader dies without a goodbye: b takes the lead
        fleet.kill("controller-a")
        killed = time.monotonic()
        _eventually(lambda: _role(b) == "leader", "replica b leading", timeout_s=60)
        handover_s = time.monotonic() - killed
        print(f"leadership handed over {handover_s:.2f} s after SIGKILL")
        assert handover_s < HANDOVER_BOUND_S

        # b schedules: the holder is lost, b's loop marks it Offline and moves the
        # deployment; the other edge node's agent, which was on a, gets it through b
        fleet.url = b
        fleet.kill(f"agent-{first}")
        other = next(n for n in ("xnx-1", "orin-1") if n != first)
        _eventually(lambda: _placed(fleet) == [other], f"the deployment moved to {other}")
        offline = [
            c
            for c in fleet.get(f"/v1/nodes/{first}")["status"]["conditions"]
            if c["type"] == "Offline"
        ]
        assert offline and offline[0]["status"] == "True"
        _eventually(lambda: fleet.serves(other), f"{other} serving the model")
        moved = [e for e in fleet.get("/v1/events?source=controller") if e["kind"] == "NodeOffline"]
        assert [e["subject"] for e in moved] == [first]
        # the agents that were on a heartbeat to b: none of them was lost
        for node in (n for n in NODES if n != first):
            conditions = fleet.get(f"/v1/nodes/{node}")["status"]["conditions"]
            assert {c["type"]: c["status"] for c in conditions}.get("Offline") == "False", node
        unreachable = (tmp_path / f"agent-{other}.log").read_text()
        assert "trying " + b in unreachable  # it failed over, as its log says
    finally:
        fleet.stop_all()

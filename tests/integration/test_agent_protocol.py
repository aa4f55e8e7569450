"""The agent against a fake controller that speaks the agent protocol: enrolment once,
the credential reused, heartbeats and what they carry, the long poll with ETag, and a
credential the controller refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from agent_helpers import PROFILE, TOKEN, eventually, running_agent, settings_for
from fake_controller import FakeController

from edgetier.agent import Agent, AgentStore, CredentialRejectedError
from edgetier.hardware import get_profile

pytestmark = pytest.mark.integration


async def test_enrols_once_and_reuses_its_credential_on_later_starts(tmp_path: Path) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        settings = settings_for(fake.url, tmp_path / "store", labels={"site": "north"})
        async with running_agent(settings):
            await eventually(lambda: fake.last_heartbeat("edge-1"), what="a heartbeat")
        assert len(fake.enrolments) == 1
        enrolled = fake.enrolments[0]
        assert (enrolled.name, enrolled.tier, enrolled.profile) == ("edge-1", "edge", PROFILE)
        assert enrolled.labels == {"site": "north"}
        beats = len(fake.heartbeats)
        # the token is spent: a second start must use the stored credential, not enrol
        async with running_agent(settings):
            await eventually(lambda: len(fake.heartbeats) > beats, what="another heartbeat")
        assert len(fake.enrolments) == 1
        assert not [r for r in fake.refused if r[1] == 401]
    store = AgentStore(tmp_path / "store")
    try:
        credential = store.credential()
        assert credential is not None and credential.node == "edge-1"
        assert (tmp_path / "store").stat().st_mode & 0o077 == 0  # only the agent reads it
    finally:
        store.close()


async def test_a_heartbeat_carries_presented_telemetry_state_and_backlog(tmp_path: Path) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        async with running_agent(settings_for(fake.url, tmp_path / "s")):
            beat = await eventually(
                lambda: next((h for n, h in fake.heartbeats[1:] if n == "edge-1"), None),
                what="a second heartbeat",
            )
    device = get_profile(PROFILE)
    t = beat.telemetry
    assert t.simulated is True  # a presented profile is never claimed as measured
    assert t.time is not None and t.utilisation is not None and 0 <= t.utilisation <= 1
    assert device.tdp_w is not None and t.power_w is not None
    assert (device.idle_w or 0.0) <= t.power_w <= device.tdp_w
    assert t.temperature_c is not None and 20 < t.temperature_c < 70
    kinds = {(c.type, c.status, c.reason) for c in beat.conditions}
    assert ("Ready", "True", "Converged") in kinds  # nothing to run yet: converged
    assert ("Throttled", "False", "Simulated") in kinds
    assert beat.workloads == [] and beat.desired_generation == 0
    assert beat.outbox_pending >= 1  # its own events and samples, not yet acknowledged


async def test_long_poll_sends_the_etag_and_takes_a_new_generation(tmp_path: Path) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        async with running_agent(settings_for(fake.url, tmp_path / "s")) as agent:
            await eventually(lambda: any(s == 304 for _, _, s in fake.polls), what="a 304")
            assert all(m == '"0"' for _, m, s in fake.polls if s == 304)
            fake.set_desired("edge-1", [])  # generation 1, no assignment
            await eventually(
                lambda: agent.desired is not None and agent.desired.generation == 1,
                what="generation 1",
            )
            await eventually(
                lambda: any(m == '"1"' for _, m, _ in fake.polls), what="a poll for '\"1\"'"
            )
            await eventually(
                lambda: (h := fake.last_heartbeat("edge-1")) and h.desired_generation == 1,
                what="a heartbeat reporting generation 1",
            )
    store = AgentStore(tmp_path / "s")
    try:
        desired = store.desired()
        assert desired is not None and desired.generation == 1  # kept for the next start
    finally:
        store.close()


async def test_a_revoked_credential_stops_the_agent_saying_what_to_do(tmp_path: Path) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        settings = settings_for(fake.url, tmp_path / "s")
        agent = Agent(settings)
        task = asyncio.create_task(agent.run(asyncio.Event()))
        await eventually(lambda: fake.last_heartbeat("edge-1"), what="a heartbeat")
        fake.revoke("edge-1")
        with pytest.raises(CredentialRejectedError, match="--token NEW"):
            await asyncio.wait_for(task, 20)
        # a later start with the same (spent) token stops at once, before any request
        requests = len(fake.enrolments) + len(fake.heartbeats)
        with pytest.raises(CredentialRejectedError, match="refused by the controller"):
            await Agent(settings).run(asyncio.Event())
        assert len(fake.enrolments) + len(fake.heartbeats) == requests
        # a new token enrols again, keeping the store
        fake.tokens.add("second-token-0123456789")
        renewed = settings.model_copy(update={"token": "second-token-0123456789"})
        async with running_agent(renewed):
            await eventually(lambda: len(fake.enrolments) == 2, what="the second enrolment")
            await eventually(lambda: fake.stored("edge-1"), what="records under the new credential")


async def test_a_spent_enrolment_token_is_refused_clearly(tmp_path: Path) -> None:
    with FakeController(tokens=set()) as fake:
        with pytest.raises(CredentialRejectedError, match="enrolment of node edge-1 refused"):
            await asyncio.wait_for(
                Agent(settings_for(fake.url, tmp_path / "s")).run(asyncio.Event()), 20
            )
        assert fake.refused == [("/v1/enrol", 401)]


async def test_a_credential_close_to_expiry_is_renewed_and_the_new_one_used(
    tmp_path: Path,
) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        # renew whenever fewer than 31 days are left: the fake's credentials last 30
        settings = settings_for(fake.url, tmp_path / "s", renew_before_s=31 * 24 * 3600.0)
        async with running_agent(settings):
            await eventually(lambda: fake.renewals, what="a renewal")
            renewed = fake.nodes["edge-1"].credential
            beats = len(fake.heartbeats)
            await eventually(lambda: len(fake.heartbeats) > beats + 1, what="heartbeats after it")
        # the old credential was revoked and the agent switched: a request that was in
        # flight with the old one when the renewal landed is refused (401) and sent again
        # with the new one, so the agent goes on (running_agent raises if it stopped)
        assert fake.renewals
    store = AgentStore(tmp_path / "s")
    try:
        held = store.credential()
        assert held is not None and held.credential in (renewed, fake.nodes["edge-1"].credential)
    finally:
        store.close()

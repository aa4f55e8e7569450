"""The agent's use of change notices, without a broker: a notice cuts a parked long poll
short and the desired state is asked for at once; a notice of the generation it holds
changes nothing; without --mqtt the long poll is the one call made."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from edgetier.agent import Agent, AgentSettings
from edgetier.control import DesiredState


class ParkingClient:
    """The desired-state call of the agent's client: a long poll (``wait_s`` > 0) parks
    until cancelled, as one parked on a replica that never hears of the change; an
    immediate one answers with the new state."""

    def __init__(self, state: DesiredState) -> None:
        self.state = state
        self.calls: list[tuple[str | None, float]] = []
        self.cancelled = 0
        self.parked = asyncio.Event()

    async def desired(
        self, node: str, *, etag: str | None, wait_s: float
    ) -> tuple[DesiredState, str | None] | None:
        self.calls.append((etag, wait_s))
        if wait_s == 0:
            return self.state, f'"{self.state.generation}"'
        self.parked.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return None

    async def aclose(self) -> None:
        pass


def _agent(tmp_path: Path, client: ParkingClient, **extra: Any) -> Agent:
    settings = AgentSettings(
        controller="http://127.0.0.1:9", name="edge-1", store=tmp_path, wait_s=60, **extra
    )
    return Agent(settings, client=client)  # type: ignore[arg-type]


async def test_a_notice_cuts_the_parked_poll_short(tmp_path: Path) -> None:
    client = ParkingClient(DesiredState(node="edge-1", generation=3))
    agent = _agent(tmp_path, client, mqtt_url="mqtt://127.0.0.1:9")
    fetch = asyncio.create_task(agent._desired('"2"'))
    await asyncio.wait_for(client.parked.wait(), 5)
    agent._notice(3)
    answer = await asyncio.wait_for(fetch, 5)
    assert answer is not None and answer[0].generation == 3
    assert client.calls == [('"2"', 60), ('"2"', 0)]
    assert client.cancelled == 1


async def test_a_notice_of_the_held_generation_is_ignored(tmp_path: Path) -> None:
    client = ParkingClient(DesiredState(node="edge-1", generation=3))
    agent = _agent(tmp_path, client, mqtt_url="mqtt://127.0.0.1:9")
    agent.desired = DesiredState(node="edge-1", generation=3)
    fetch = asyncio.create_task(agent._desired('"3"'))
    await asyncio.wait_for(client.parked.wait(), 5)
    agent._notice(3)  # a retained notice seen again on reconnection
    await asyncio.sleep(0.2)
    assert not fetch.done() and client.calls == [('"3"', 60)]
    agent._notice(2)  # any other generation: asked at once (the controller decides)
    await asyncio.wait_for(fetch, 5)
    assert client.calls == [('"3"', 60), ('"3"', 0)]


async def test_a_notice_while_not_polling_makes_the_next_call_immediate(tmp_path: Path) -> None:
    client = ParkingClient(DesiredState(node="edge-1", generation=5))
    agent = _agent(tmp_path, client, mqtt_url="mqtt://127.0.0.1:9")
    agent._notice(5)
    answer = await asyncio.wait_for(agent._desired(None), 5)
    assert answer is not None and client.calls == [(None, 0)]


async def test_without_mqtt_the_long_poll_is_the_one_call(tmp_path: Path) -> None:
    client = ParkingClient(DesiredState(node="edge-1", generation=3))
    agent = _agent(tmp_path, client)
    assert agent.notices is None
    fetch = asyncio.create_task(agent._desired('"2"'))
    await asyncio.wait_for(client.parked.wait(), 5)
    fetch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await fetch
    assert client.calls == [('"2"', 60)]

"""The outbox: events and telemetry samples numbered per node, kept while the controller is
away, delivered in order when it returns, stored once however often they are sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import TOKEN, eventually, running_agent, settings_for
from fake_controller import FakeController

from edgetier.agent import Agent

pytestmark = pytest.mark.integration


def _contiguous(fake: FakeController) -> list[int]:
    sequences = [r.sequence for r in fake.stored("edge-1")]
    assert sequences == list(range(1, len(sequences) + 1)), sequences
    return sequences


def _pending(agent: Agent) -> int:
    assert agent.store is not None
    return agent.store.pending_count()


async def test_outage_records_wait_and_arrive_in_order_without_duplicates(
    tmp_path: Path,
) -> None:
    fake = FakeController(tokens={TOKEN})
    fake.start()
    try:
        async with running_agent(settings_for(fake.url, tmp_path / "s")) as agent:
            await eventually(lambda: len(fake.stored("edge-1")) >= 3, what="first records")
            fake.stop()
            backlog = await eventually(
                lambda: _pending(agent) >= 10 and _pending(agent), what="a growing backlog"
            )
            delivered_before = len(fake.stored("edge-1"))
            fake.start()
            await eventually(lambda: _pending(agent) == 0, what="the backlog delivered")
            assert agent.store is not None
            last = agent.store.last_sequence
            sequences = _contiguous(fake)
            assert sequences[-1] >= last and len(sequences) >= delivered_before + backlog
        assert fake.duplicates == 0
        kinds = [r.kind for r in fake.stored("edge-1")]
        down = kinds.index("controller.unreachable")
        up = kinds.index("controller.reachable")
        assert down < up and "telemetry" in kinds[down:up]  # samples taken while away
        sample = next(r for r in fake.stored("edge-1") if r.kind == "telemetry")
        assert sample.data["simulated"] is True
        # every batch was in order and began where the previous acknowledgement ended
        starts = [batch[0] for batch in fake.batches]
        assert starts == sorted(starts)
        assert all(b == list(range(b[0], b[0] + len(b))) for b in fake.batches)
    finally:
        fake.stop()


async def test_a_lost_acknowledgement_sends_again_and_stores_once(tmp_path: Path) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        async with running_agent(settings_for(fake.url, tmp_path / "s")) as agent:
            await eventually(lambda: fake.stored("edge-1"), what="first records")
            fake.lose_answers = 2  # stored, but the agent never hears so: twice
            await eventually(lambda: fake.duplicates > 0, what="a batch sent again")
            await eventually(
                lambda: fake.lose_answers == 0 and _pending(agent) == 0, what="delivery"
            )
            sequences = _contiguous(fake)
            assert agent.store is not None and agent.store.acked_through <= sequences[-1]
        received = [s for batch in fake.batches for s in batch]
        assert len(received) > len(set(received))  # some were sent twice...
        assert fake.duplicates == len(received) - len(set(received))  # ...and counted once


async def test_a_controller_that_lost_records_gets_them_again_from_its_409(
    tmp_path: Path,
) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        async with running_agent(settings_for(fake.url, tmp_path / "s")) as agent:
            await eventually(lambda: len(fake.stored("edge-1")) >= 6, what="six records")
            fake.forget_records_after("edge-1", 2)
            await eventually(lambda: ("/v1/nodes/edge-1/records", 409) in fake.refused, what="409")
            await eventually(lambda: _pending(agent) == 0, what="delivery after the 409")
            _contiguous(fake)
            assert any(batch[0] == 3 for batch in fake.batches)  # sent again from 3


async def test_a_gap_older_than_the_kept_records_is_reported(tmp_path: Path) -> None:
    with FakeController(tokens={TOKEN}) as fake:
        settings = settings_for(fake.url, tmp_path / "s", keep_acked_records=0)
        async with running_agent(settings):
            await eventually(lambda: len(fake.stored("edge-1")) >= 4, what="four records")
            fake.forget_records_after("edge-1", 1)

            def reported() -> bool:
                beat = fake.last_heartbeat("edge-1")
                return beat is not None and any(
                    c.reason == "OutboxGap" and c.status == "True" for c in beat.conditions
                )

            await eventually(reported, what="a Degraded OutboxGap condition")
            gap = next(
                c
                for c in fake.last_heartbeat("edge-1").conditions  # type: ignore[union-attr]
                if c.reason == "OutboxGap"
            )
            assert "expects record 2" in gap.message

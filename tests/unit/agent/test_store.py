"""The agent's local store: the outbox's numbering and acknowledgements, the credential,
the desired state and the port slots, kept across reopening (a restart, a reboot)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgetier.agent import AgentStore
from edgetier.agent._store import Artifact, Credential
from edgetier.control import Assignment, DesiredState
from edgetier.errors import ConfigError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(tmp_path / "store", keep_acked=3)
    yield s
    s.close()


def test_records_are_numbered_from_one_in_order_and_survive_reopening(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "s")
    assert [store.append("telemetry", "n", {"i": i}) for i in range(3)] == [1, 2, 3]
    store.close()
    again = AgentStore(tmp_path / "s")
    try:
        assert again.append("event") == 4
        pending = again.pending(limit=10)
        assert [r.sequence for r in pending] == [1, 2, 3, 4]
        assert pending[1].data == {"i": 1} and pending[1].kind == "telemetry"
        assert again.pending_count() == 4
    finally:
        again.close()


def test_an_ack_never_goes_back_and_acked_records_are_kept_for_a_while(
    store: AgentStore,
) -> None:
    for i in range(8):
        store.append("e", data={"i": i})
    assert store.ack(5) == 5
    assert store.ack(3) == 5  # a stale or repeated acknowledgement changes nothing
    assert store.ack(5) == 5
    assert [r.sequence for r in store.pending(limit=10)] == [6, 7, 8]
    assert store.oldest_sequence() == 3  # keep_acked=3: 3, 4 and 5 stay, to resend
    assert store.ack(100) == 8  # never beyond what was numbered
    assert store.pending(limit=10) == [] and store.pending_count() == 0


def test_rewind_sends_again_what_is_kept_and_says_when_it_is_not(store: AgentStore) -> None:
    for _ in range(8):
        store.append("e")
    store.ack(6)  # keeps 4, 5, 6
    assert store.rewind(4) is True
    assert [r.sequence for r in store.pending(limit=2)] == [4, 5]
    store.ack(8)
    assert store.rewind(2) is False  # dropped long ago
    assert store.acked_through == 8
    assert store.rewind(9) is True  # the controller holds all: nothing to resend
    assert store.rewind(10) is False  # beyond anything numbered


def test_numbering_moves_past_a_controller_that_holds_more(store: AgentStore) -> None:
    store.append("e")
    store.skip_to(40)
    assert store.append("e") == 41
    assert store.acked_through == 40


def test_credential_desired_state_and_artifacts_are_kept(tmp_path: Path) -> None:
    expires = datetime.now(UTC) + timedelta(days=1)
    desired = DesiredState(
        node="edge-1",
        generation=7,
        assignments=[Assignment(deployment="d", generation=3, kind="pipeline", pipeline={})],
    )
    store = AgentStore(tmp_path / "s")
    store.save_credential(Credential("edge-1", "secret", expires, "abc"))
    store.save_desired(desired)
    store.add_artifact(Artifact("sha256:" + "0" * 64, "m", 2, tmp_path / "f", 10))
    store.close()
    again = AgentStore(tmp_path / "s")
    try:
        credential = again.credential()
        assert credential is not None and credential.credential == "secret"
        assert not credential.rejected and credential.expires_at == expires
        again.reject_credential()
        assert again.credential().rejected  # type: ignore[union-attr]
        assert again.desired() == desired
        artifact = again.artifact("sha256:" + "0" * 64)
        assert artifact is not None and (artifact.model, artifact.version) == ("m", 2)
    finally:
        again.close()
    assert (tmp_path / "s" / "agent.db").stat().st_mode & 0o077 == 0


def test_a_store_belongs_to_one_node(store: AgentStore) -> None:
    store.claim("edge-1", "http://a:1")
    store.claim("edge-1", "http://b:2")  # the controller may move
    with pytest.raises(ConfigError, match="belongs to node 'edge-1', not 'edge-2'"):
        store.claim("edge-2", "http://b:2")


def test_pipeline_slots_are_stable_and_limited(store: AgentStore) -> None:
    assert store.slot("a", limit=2) == 1
    assert store.slot("b", limit=2) == 2
    assert store.slot("c", limit=2) is None
    assert store.slot("a", limit=2) == 1
    store.release_slot("a")
    assert store.slot("c", limit=2) == 1
    assert store.slots() == {"b": 2, "c": 1}

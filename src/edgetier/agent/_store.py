"""The agent's local store: one SQLite file (WAL) that carries the node through outages,
its own restarts and the host's reboots.

It holds the node credential, the last desired state (written before the agent acts on
it), the index of verified artifacts, the port slots of the pipelines, the children's
process ids, and the outbox: events and telemetry samples numbered per node from 1,
delivered in order and dropped only once the controller has acknowledged them::

    store = AgentStore(Path("var/agent/edge-1"))
    seq = store.append("condition", "traffic", {"type": "Ready", "status": "True"})
    store.pending(limit=100)       # records after the acknowledged sequence, in order
    store.ack(seq)                 # the controller stored them
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgetier.control import DesiredState, Record
from edgetier.errors import ConfigError

__all__ = ["AgentStore", "Artifact", "Credential"]

DB_NAME = "agent.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS desired (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    digest TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    verified_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    sequence INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slots (deployment TEXT PRIMARY KEY, slot INTEGER NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS children (
    name TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Credential:
    """The node credential the controller gave at enrolment."""

    node: str
    credential: str
    expires_at: datetime
    token_sha256: str
    rejected: bool = False


@dataclass(frozen=True)
class Artifact:
    """A model file downloaded and checked against its digest."""

    digest: str
    model: str
    version: int
    path: Path
    size_bytes: int


class AgentStore:
    """The SQLite store of one agent (``<dir>/agent.db``); used from one thread."""

    def __init__(self, directory: Path, *, keep_acked: int = 10_000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # it holds the node credential
        self.path = self.directory / DB_NAME
        self.keep_acked = keep_acked
        fresh = not self.path.exists()
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        if fresh:
            os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a record the agent has counted survives a power cut, as a reboot demands
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"AgentStore({str(self.directory)!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta ----------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _int(self, key: str) -> int:
        value = self.get(key)
        return int(value) if value is not None else 0

    def claim(self, node: str, controller: str) -> None:
        """Bind the store to one node and controller; another node's store is refused (the
        controller may move: the node stays the same)."""
        held = self.get("node")
        if held is not None and held != node:
            raise ConfigError(
                f"store {self.directory}: it belongs to node {held!r}, not {node!r}; "
                "give each agent its own --store"
            )
        self.put("node", node)
        self.put("controller", controller)

    # -- credential ----------------------------------------------------------------------

    def credential(self) -> Credential | None:
        raw = self.get("credential")
        if raw is None:
            return None
        data = json.loads(raw)
        return Credential(
            node=data["node"],
            credential=data["credential"],
            expires_at=datetime.fromisoformat(data["expires_at"]),
            token_sha256=data["token_sha256"],
            rejected=bool(data.get("rejected", False)),
        )

    def save_credential(self, credential: Credential) -> None:
        self.put(
            "credential",
            json.dumps(
                {
                    "node": credential.node,
                    "credential": credential.credential,
                    "expires_at": credential.expires_at.isoformat(),
                    "token_sha256": credential.token_sha256,
                    "rejected": credential.rejected,
                }
            ),
        )

    def reject_credential(self) -> None:
        held = self.credential()
        if held is not None and not held.rejected:
            self.save_credential(dataclasses.replace(held, rejected=True))

    # -- desired state -------------------------------------------------------------------

    def desired(self) -> DesiredState | None:
        row = self._db.execute("SELECT body FROM desired WHERE id = 1").fetchone()
        return None if row is None else DesiredState.model_validate_json(row[0])

    def save_desired(self, desired: DesiredState) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO desired (id, generation, body, received_at) "
            "VALUES (1, ?, ?, ?)",
            (desired.generation, desired.model_dump_json(), _now().isoformat()),
        )

    # -- artifacts -----------------------------------------------------------------------

    def artifact(self, digest: str) -> Artifact | None:
        row = self._db.execute(
            "SELECT digest, model, version, path, size_bytes FROM artifacts WHERE digest = ?",
            (digest,),
        ).fetchone()
        return None if row is None else Artifact(row[0], row[1], row[2], Path(row[3]), row[4])

    def artifacts(self) -> list[Artifact]:
        rows = self._db.execute(
            "SELECT digest, model, version, path, size_bytes FROM artifacts ORDER BY digest"
        ).fetchall()
        return [Artifact(r[0], r[1], r[2], Path(r[3]), r[4]) for r in rows]

    def add_artifact(self, artifact: Artifact) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO artifacts "
            "(digest, model, version, path, size_bytes, verified_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                artifact.digest,
                artifact.model,
                artifact.version,
                str(artifact.path),
                artifact.size_bytes,
                _now().isoformat(),
            ),
        )

    def forget_artifact(self, digest: str) -> None:
        self._db.execute("DELETE FROM artifacts WHERE digest = ?", (digest,))

    # -- port slots of pipelines ---------------------------------------------------------

    def slot(self, deployment: str, *, limit: int) -> int | None:
        """The deployment's slot (1..limit), kept across restarts; None when all are taken."""
        with self._transaction() as db:
            row = db.execute("SELECT slot FROM slots WHERE deployment = ?", (deployment,))
            found = row.fetchone()
            if found is not None:
                return int(found[0])
            taken = {int(r[0]) for r in db.execute("SELECT slot FROM slots")}
            free = next((s for s in range(1, limit + 1) if s not in taken), None)
            if free is not None:
                db.execute("INSERT INTO slots (deployment, slot) VALUES (?, ?)", (deployment, free))
            return free

    def release_slot(self, deployment: str) -> None:
        self._db.execute("DELETE FROM slots WHERE deployment = ?", (deployment,))

    def slots(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._db.execute("SELECT deployment, slot FROM slots")}

    # -- children ------------------------------------------------------------------------

    def children(self) -> dict[str, tuple[int, float]]:
        """``{name: (pid, start time)}`` of the children the agent started last."""
        rows = self._db.execute("SELECT name, pid, started FROM children").fetchall()
        return {r[0]: (int(r[1]), float(r[2])) for r in rows}

    def save_child(self, name: str, pid: int, started: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO children (name, pid, started) VALUES (?, ?, ?)",
            (name, pid, started),
        )

    def forget_child(self, name: str) -> None:
        self._db.execute("DELETE FROM children WHERE name = ?", (name,))

    # -- outbox --------------------------------------------------------------------------

    @property
    def acked_through(self) -> int:
        """Every record up to this sequence is stored by the controller."""
        return self._int("acked_through")

    @property
    def last_sequence(self) -> int:
        """The last sequence given to a record (0 before the first)."""
        return self._int("last_sequence")

    def append(self, kind: str, subject: str = "", data: dict[str, Any] | None = None) -> int:
        """Add a record to the outbox; returns its sequence (per node, from 1, no gaps)."""
        with self._transaction() as db:
            sequence = self._int("last_sequence") + 1
            db.execute(
                "INSERT INTO outbox (sequence, time, kind, subject, data) VALUES (?, ?, ?, ?, ?)",
                (sequence, _now().isoformat(), kind, subject, json.dumps(data or {})),
            )
            self.put("last_sequence", str(sequence))
        return sequence

    def pending_count(self) -> int:
        return self.last_sequence - self.acked_through

    def pending(self, *, limit: int) -> list[Record]:
        """The oldest records the controller has not acknowledged, in order."""
        rows = self._db.execute(
            "SELECT sequence, time, kind, subject, data FROM outbox WHERE sequence > ? "
            "ORDER BY sequence LIMIT ?",
            (self.acked_through, limit),
        ).fetchall()
        return [
            Record(
                sequence=r[0],
                time=datetime.fromisoformat(r[1]),
                kind=r[2],
                subject=r[3],
                data=json.loads(r[4]),
            )
            for r in rows
        ]

    def ack(self, acked_through: int) -> int:
        """Take the controller's acknowledgement; returns the acknowledged sequence now.

        An acknowledgement never moves backwards (a repeated or stale one changes
        nothing). Acknowledged records are kept, ``keep_acked`` of them, so that records
        a controller loses later can be sent again; older ones are dropped.
        """
        with self._transaction() as db:
            held = self._int("acked_through")
            through = min(max(held, acked_through), self._int("last_sequence"))
            if through != held:
                self.put("acked_through", str(through))
            db.execute("DELETE FROM outbox WHERE sequence <= ?", (through - self.keep_acked,))
        return through

    def rewind(self, expected: int) -> bool:
        """Send again from ``expected`` (a controller that lost records asks for them).

        Returns False when the store no longer holds that record: the records between
        are gone for good.
        """
        if expected < 1 or expected > self.last_sequence + 1:
            return False
        if expected <= self.acked_through:
            row = self._db.execute(
                "SELECT 1 FROM outbox WHERE sequence = ?", (expected,)
            ).fetchone()
            if row is None:
                return False
        self.put("acked_through", str(expected - 1))
        return True

    def skip_to(self, sequence: int) -> None:
        """Number the next record after ``sequence`` (a controller that holds more than
        this store, after the store was reset): new records must not look like duplicates."""
        with self._transaction():
            if sequence > self._int("last_sequence"):
                self.put("last_sequence", str(sequence))
                self.put("acked_through", str(sequence))

    def oldest_sequence(self) -> int | None:
        row = self._db.execute("SELECT MIN(sequence) FROM outbox").fetchone()
        return None if row is None or row[0] is None else int(row[0])


def _now() -> datetime:
    return datetime.now(UTC)

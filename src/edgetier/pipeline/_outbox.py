"""An on-disk outbox (SQLite): events stay in it until the broker acknowledges them.

Rows are kept in insertion order; a row is deleted only when its PUBACK arrives, so a
broker outage, or a crash of the node, loses nothing: the next connection (or the next
run) sends the remaining rows again. Consumers drop duplicates by the event id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path


class Outbox:
    """A durable FIFO of (event id, topic, payload) rows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "event_id TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL)"
        )

    def add(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO outbox (event_id, topic, payload) VALUES (?, ?, ?)", list(rows)
            )
            self._db.execute("COMMIT")

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Rows with a sequence number above `seq`, oldest first."""
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
            return [(int(s), str(t), bytes(p)) for s, t, p in cur.fetchall()]

    def delete(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

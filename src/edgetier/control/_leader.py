"""Which replica runs the background passes: the holder of a PostgreSQL advisory lock.

Every replica serves the API; only the leader runs the loop's passes (heartbeat
timeouts, reconcile, telemetry compaction, the rollout driver). Leadership is a
session-level advisory lock (``pg_try_advisory_lock``) held on a connection of its own:
PostgreSQL releases it the moment that session ends, so a replica that dies (its
sockets closed by the kernel) hands over at the next try of another, and one that loses
its connection (a database restart, a network cut) notices on its next check and steps
down. No lease to renew, no clock to trust, no consensus protocol of our own: the
database already decides. On SQLite there is one replica and it always leads::

    leadership = Leadership(db, replica="ctl-a")
    leadership.poll()          # on every loop tick: take the lock, or check it is held
    leadership.is_leader
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from edgetier.control._db import Database, advisory_key, libpq_conninfo

__all__ = ["LEADER_LOCK", "Leadership", "connect"]

log = logging.getLogger("edgetier.control")

LEADER_LOCK = advisory_key("leader")

# A connection that stops answering counts as lost within about ten seconds (TCP
# keepalives and a user timeout), not the operating system's two hours.
_CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


def connect(url: str, purpose: str) -> Any:
    """A psycopg connection of its own (autocommit) to the database of ``url``."""
    import psycopg

    return psycopg.connect(
        libpq_conninfo(url),
        autocommit=True,
        application_name=f"edgetier-controller {purpose}"[:63],
        **_CONNECT_OPTIONS,
    )


class Leadership:
    def __init__(self, db: Database, replica: str) -> None:
        self.replica = replica
        self._url = db.url if db.is_postgresql else None
        self._connection: Any = None
        self._leader = self._url is None
        self._lock = threading.Lock()
        self.changed_at = time.monotonic()

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def role(self) -> str:
        return "leader" if self._leader else "follower"

    def poll(self) -> bool:
        """Take the lock when free, or check that the connection holding it is alive
        (one round trip); step down when it is not. Blocking: run it in a thread."""
        if self._url is None:
            return True
        import psycopg

        with self._lock:
            try:
                if self._connection is None or self._connection.closed:
                    self._connection = connect(self._url, f"{self.replica} leadership")
                if self._leader:
                    # a session-level lock lasts as long as its session: alive means held
                    self._connection.execute("SELECT 1")
                else:
                    row = self._connection.execute(
                        "SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)
                    ).fetchone()
                    if row is not None and row[0]:
                        self._set(True, "took the leader lock")
            except psycopg.Error as exc:
                self._drop()
                if self._leader:
                    self._set(False, f"lost its database connection ({exc})")
        return self._leader

    def release(self) -> None:
        """Step down (at shutdown): ending the session frees the lock for another."""
        with self._lock:
            self._drop()
            if self._url is not None and self._leader:
                self._set(False, "shutting down")

    def _set(self, leader: bool, why: str) -> None:
        self._leader = leader
        self.changed_at = time.monotonic()
        if leader:
            log.info("replica %s is the leader: %s", self.replica, why)
        else:
            log.warning("replica %s stepped down: %s", self.replica, why)

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # closing a broken connection may fail; it is gone anyway
                log.debug("closing the leadership connection failed", exc_info=True)

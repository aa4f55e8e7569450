"""Change notices between replicas: PostgreSQL LISTEN/NOTIFY.

A node's long poll is parked on whichever replica it reached; the change that wakes it
may be committed by another. So every change that moves desired states also sends
``NOTIFY edgetier_control`` in its own transaction (PostgreSQL delivers it on commit,
never for a transaction rolled back), and each replica LISTENs on a connection of its
own and wakes its parked polls. The same channel carries a follower's requests for a
reconcile pass (a node back online, throttled or cooled down) to the leader, whose loop
runs the passes.

A notice is a hint, not the record: what a woken poll answers is read from the
database. Notices sent while a listener was away (its connection lost) are not queued for
it, so each time it (re)connects it calls ``on_listening``, which compares the polls parked
here with the database. Payloads stay under PostgreSQL's 8000-byte limit by splitting::

    notices = PgNotices(db, "ctl-a", on_desired=notifier.publish, on_pending=pending.add)
    notices.start()
    notices.send_desired(session, {"edge-1": 5})    # inside a write transaction
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from edgetier.control._db import Database
from edgetier.control._leader import connect

__all__ = ["CHANNEL", "PgNotices"]

log = logging.getLogger("edgetier.control")

CHANNEL = "edgetier_control"
_MAX_PAYLOAD_BYTES = 7000  # PostgreSQL's limit is 8000


class PgNotices:
    def __init__(
        self,
        db: Database,
        replica: str,
        *,
        on_desired: Callable[[dict[str, int]], None],
        on_pending: Callable[[set[str] | None], None],
        on_listening: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.replica = replica
        self.on_desired = on_desired
        self.on_pending = on_pending
        self.on_listening = on_listening
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- sending ---------------------------------------------------------------------

    def send_desired(self, session: Session, generations: Mapping[str, int]) -> None:
        """Tell the other replicas, when ``session`` commits, of nodes' new desired
        generations."""
        for chunk in _chunks(dict(generations)):
            self._send(session, {"r": self.replica, "d": chunk})

    def send_pending(self, names: Iterable[str] | None) -> None:
        """Ask the leader for a reconcile pass of ``names`` (None: every deployment)."""
        wanted = None if names is None else sorted(set(names))
        if wanted == []:
            return
        with self.db.write() as session:
            self._send(session, {"r": self.replica, "p": wanted})

    def _send(self, session: Session, message: dict[str, Any]) -> None:
        payload = json.dumps(message, separators=(",", ":"))
        session.execute(select(func.pg_notify(CHANNEL, payload)))

    # -- listening -------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, name="edgetier-pg-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.listening.clear()

    def _listen(self) -> None:
        import psycopg

        backoff_s = 0.5
        while not self._stop.is_set():
            try:
                with connect(self.db.url, f"{self.replica} listen") as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff_s = 0.5
                    self.on_listening()  # what changed while nobody listened
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=0.25):
                            self._handle(notice.payload)
            except (psycopg.Error, SQLAlchemyError) as exc:  # its own, or on_listening's
                self.listening.clear()
                log.warning("change notices: %s; listening again in %.1f s", exc, backoff_s)
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)

    def _handle(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message.get("r") == self.replica:
                return  # its own: already handled in process
            if "d" in message:
                self.on_desired({str(k): int(v) for k, v in message["d"].items()})
            if "p" in message:
                names = message["p"]
                self.on_pending(None if names is None else {str(n) for n in names})
        except (ValueError, TypeError, AttributeError):
            log.warning("change notices: ignored a malformed notice %r", payload[:200])


def _chunks(generations: dict[str, int]) -> Iterator[dict[str, int]]:
    chunk: dict[str, int] = {}
    size = 0
    for node, generation in generations.items():
        entry = len(node) + len(str(generation)) + 6
        if chunk and size + entry > _MAX_PAYLOAD_BYTES:
            yield chunk
            chunk, size = {}, 0
        chunk[node] = generation
        size += entry
    if chunk:
        yield chunk

"""The append-only event log and the idempotent ingest of a node's records.

Each source numbers its records from 1 without gaps; ``sequences`` holds the last one
stored per source. A node's batch is stored in order: a record at or below that number is
a duplicate (counted, ignored), one just above it is stored, and one further on leaves a
gap and refuses the whole batch with the sequence expected. Delivery is at least once,
storage exactly once. Records of kind ``telemetry`` become telemetry samples, the rest
events; both count in the node's one sequence::

    append(session, "controller", now, "NodeOffline", subject="edge-1", data={...})
    ack = ingest(session, "edge-1", batch, now)    # RecordAck(acked_through=12, duplicates=2)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from edgetier.control._db import EventRow, SequenceRow, TelemetryRow
from edgetier.control._protocol import RecordAck, RecordBatch
from edgetier.control._telemetry import sample_values
from edgetier.errors import ConflictError

__all__ = [
    "CONTROLLER",
    "TELEMETRY_KIND",
    "IngestResult",
    "SequenceGapError",
    "acked_through",
    "append",
    "event_dict",
    "ingest",
    "list_events",
]

CONTROLLER = "controller"
TELEMETRY_KIND = "telemetry"


class SequenceGapError(ConflictError):
    """Raised when a batch's record would leave a gap after the last stored sequence."""

    def __init__(self, message: str, *, expected: int) -> None:
        super().__init__(message)
        self.expected = expected


@dataclass
class IngestResult:
    ack: RecordAck
    stored_events: int
    stored_samples: int


# FOR UPDATE: on a server database two writers of one source queue here (built once:
# building a statement costs more than running it on SQLite)
_COUNTER = select(SequenceRow).where(SequenceRow.source == bindparam("source")).with_for_update()


def _counter(session: Session, source: str) -> SequenceRow:
    row = session.scalars(_COUNTER, {"source": source}).first()
    if row is None:
        row = SequenceRow(source=source, last=0)
        session.add(row)
    return row


_LAST = select(SequenceRow.last).where(SequenceRow.source == bindparam("source")).with_for_update()
_SEQUENCES = cast(Table, SequenceRow.__table__)
_INSERT_SAMPLES = cast(Table, TelemetryRow.__table__).insert()
_INSERT_EVENTS = cast(Table, EventRow.__table__).insert()
_SET_LAST = _SEQUENCES.update().where(_SEQUENCES.c.source == bindparam("b_source"))


def _stored_through(session: Session, source: str) -> int:
    """The source's last stored sequence, locked for this transaction (one column read,
    no ORM object, unless the session holds that row already)."""
    held = session.identity_map.get(identity_key(SequenceRow, source))
    if held is not None:
        return int(_counter(session, source).last)
    return int(session.execute(_LAST, {"source": source}).scalar() or 0)


def _store_through(session: Session, source: str, stored: int, last: int) -> None:
    held = session.identity_map.get(identity_key(SequenceRow, source))
    if held is not None:
        _counter(session, source).last = last
    elif stored == 0 and session.execute(_LAST, {"source": source}).first() is None:
        session.execute(insert(SequenceRow), [{"source": source, "last": last}])
    else:
        session.execute(_SET_LAST, {"b_source": source, "last": last})


def acked_through(session: Session, source: str) -> int:
    row = session.get(SequenceRow, source)
    return 0 if row is None else row.last


def append(
    session: Session,
    source: str,
    time: datetime,
    kind: str,
    *,
    subject: str = "",
    data: dict[str, Any] | None = None,
) -> EventRow:
    """Append one event of ``source`` with the next sequence number."""
    counter = _counter(session, source)
    counter.last += 1
    row = EventRow(
        source=source,
        sequence=counter.last,
        time=time,
        kind=kind,
        subject=subject,
        data=data or {},
        received_at=time,
    )
    session.add(row)
    return row


def ingest(session: Session, node: str, batch: RecordBatch, now: datetime) -> IngestResult:
    """Store a node's records exactly once; SequenceGapError (409) leaves nothing stored."""
    stored = _stored_through(session, node)
    last = stored
    duplicates = 0
    events: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for record in sorted(batch.records, key=lambda r: r.sequence):
        if record.sequence <= last:
            duplicates += 1
            continue
        if record.sequence != last + 1:
            raise SequenceGapError(
                f"records: sequence {record.sequence} leaves a gap; expected {last + 1} "
                f"(stored through {stored})",
                expected=last + 1,
            )
        last = record.sequence
        if record.kind == TELEMETRY_KIND:
            samples.append(sample_values(node, record.time, record.data))
        else:
            events.append(
                {
                    "source": node,
                    "sequence": record.sequence,
                    "time": record.time,
                    "kind": record.kind,
                    "subject": record.subject,
                    "data": record.data,
                    "received_at": now,
                }
            )
    # one INSERT per table for the whole batch, nothing written before the gap check
    if samples:
        session.execute(_INSERT_SAMPLES, samples)
    if events:
        session.execute(_INSERT_EVENTS, events)
    if last != stored:
        _store_through(session, node, stored, last)
    ack = RecordAck(acked_through=last, duplicates=duplicates)
    return IngestResult(ack, len(events), len(samples))


def list_events(
    session: Session,
    *,
    source: str | None = None,
    after: int = 0,
    kind: str | None = None,
    limit: int = 500,
    newest: bool = False,
) -> list[EventRow]:
    """Events in order: with ``source``, after its sequence ``after``; without, after the
    log's position ``after`` (the ``id``). ``newest``: the last ``limit`` of them (still
    oldest first), as a log viewer shows."""
    query = select(EventRow)
    if source is not None:
        query = query.where(EventRow.source == source, EventRow.sequence > after)
        order = EventRow.sequence
    else:
        query = query.where(EventRow.id > after)
        order = EventRow.id
    if kind is not None:
        query = query.where(EventRow.kind == kind)
    if newest:
        return list(reversed(session.scalars(query.order_by(order.desc()).limit(limit)).all()))
    return list(session.scalars(query.order_by(order).limit(limit)))


def event_dict(row: EventRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "sequence": row.sequence,
        "time": row.time.isoformat(),
        "kind": row.kind,
        "subject": row.subject,
        "data": row.data,
    }

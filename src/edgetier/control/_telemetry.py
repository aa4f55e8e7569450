"""Telemetry history with a retention period and downsampling.

Every sample (a heartbeat's figures, or a ``telemetry`` record from a node's outbox) is
kept raw for ``raw_retention_s``; then :func:`compact` folds it into the mean of its
``bucket_s`` bucket, kept for ``downsampled_retention_s``; older buckets are dropped. The
defaults keep raw samples for an hour and 1-minute means for a day, so a node that
heartbeats every 10 s costs at most 360 + 1,440 rows. The grouping is done here, not in
SQL, so it runs the same on every database::

    add_sample(session, "edge-1", now, {"utilisation": 0.4, "temperature_c": 61.0})
    compact(session, now, RetentionPolicy())
    history(session, "edge-1", since=now - timedelta(hours=1))
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from edgetier.control._db import TelemetryRow

__all__ = [
    "FIELDS",
    "CompactResult",
    "RetentionPolicy",
    "add_sample",
    "compact",
    "history",
    "sample_values",
]

FIELDS = ("utilisation", "temperature_c", "power_w", "memory_used_bytes")
_BATCH = 20_000  # raw rows folded per pass: one pass stays short on a large fleet


@dataclass(frozen=True)
class RetentionPolicy:
    """How long samples are kept raw, the bucket they are averaged over, and how long the
    averages are kept."""

    raw_retention_s: float = 3600.0
    bucket_s: int = 60
    downsampled_retention_s: float = 86_400.0

    def __post_init__(self) -> None:
        from edgetier.errors import ConfigError

        if self.bucket_s < 1:
            raise ConfigError(f"telemetry bucket_s must be >= 1, got {self.bucket_s}")
        if self.raw_retention_s < 0:
            raise ConfigError(f"raw_retention_s must be >= 0, got {self.raw_retention_s}")
        if self.downsampled_retention_s < self.raw_retention_s:
            raise ConfigError(
                "downsampled_retention_s must be >= raw_retention_s, got "
                f"{self.downsampled_retention_s} < {self.raw_retention_s}"
            )


@dataclass
class CompactResult:
    folded: int = 0  # raw samples folded into buckets
    buckets: int = 0  # buckets written or updated
    dropped: int = 0  # rows past every retention


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def add_sample(session: Session, node: str, time: datetime, data: dict[str, Any]) -> None:
    """One raw sample; fields other than :data:`FIELDS` and non-numbers are left out."""
    session.add(TelemetryRow(**sample_values(node, time, data)))


def sample_values(node: str, time: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The columns of one raw sample's row (for an INSERT of many at once)."""
    values = {name: _number(data.get(name)) for name in FIELDS}
    return {"node": node, "resolution_s": 0, "time": time, "count": 1, **values}


def _bucket_start(time: datetime, bucket_s: int) -> datetime:
    epoch = time.timestamp()
    return datetime.fromtimestamp(epoch - epoch % bucket_s, UTC)


def compact(session: Session, now: datetime, policy: RetentionPolicy) -> CompactResult:
    """Fold raw samples past their retention into bucket means; drop what is past all."""
    result = CompactResult()
    cutoff = _bucket_start(now - timedelta(seconds=policy.raw_retention_s), policy.bucket_s)
    raw = list(
        session.scalars(
            select(TelemetryRow)
            .where(TelemetryRow.resolution_s == 0, TelemetryRow.time < cutoff)
            .order_by(TelemetryRow.id)
            .limit(_BATCH)
        )
    )
    groups: dict[tuple[str, datetime], list[TelemetryRow]] = defaultdict(list)
    for row in raw:
        groups[(row.node, _bucket_start(row.time, policy.bucket_s))].append(row)
    for (node, start), rows in groups.items():
        bucket = session.scalars(
            select(TelemetryRow).where(
                TelemetryRow.node == node,
                TelemetryRow.resolution_s == policy.bucket_s,
                TelemetryRow.time == start,
            )
        ).first()
        if bucket is None:
            bucket = TelemetryRow(node=node, resolution_s=policy.bucket_s, time=start, count=0)
            session.add(bucket)
        _fold(bucket, rows)
        result.buckets += 1
    if raw:
        session.execute(delete(TelemetryRow).where(TelemetryRow.id.in_([r.id for r in raw])))
        result.folded = len(raw)
    oldest = now - timedelta(seconds=policy.downsampled_retention_s)
    dropped = session.execute(delete(TelemetryRow).where(TelemetryRow.time < oldest))
    result.dropped = int(getattr(dropped, "rowcount", 0) or 0)
    return result


def _fold(bucket: TelemetryRow, rows: list[TelemetryRow]) -> None:
    """Add ``rows`` to a bucket's means; the bucket's earlier mean weighs as many samples as
    it holds."""
    for name in FIELDS:
        values = [getattr(r, name) for r in rows if getattr(r, name) is not None]
        if not values:
            continue
        old = getattr(bucket, name)
        old_weight = bucket.count if old is not None else 0
        total = (old or 0.0) * old_weight + sum(values)
        setattr(bucket, name, total / (old_weight + len(values)))
    bucket.count += len(rows)


def history(
    session: Session, node: str, *, since: datetime | None = None, limit: int = 2000
) -> list[dict[str, Any]]:
    """A node's samples and bucket means, oldest first."""
    query = select(TelemetryRow).where(TelemetryRow.node == node)
    if since is not None:
        query = query.where(TelemetryRow.time >= since)
    rows = session.scalars(query.order_by(TelemetryRow.time.desc()).limit(limit))
    return [
        {
            "time": row.time.isoformat(),
            "resolution_s": row.resolution_s,
            "count": row.count,
            **{name: getattr(row, name) for name in FIELDS},
        }
        for row in reversed(list(rows))
    ]

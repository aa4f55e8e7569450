"""``GET /v1/nodes`` on a large fleet: every node's view, built once per change.

Building a node's view (validating its stored conditions and telemetry into the
``Node`` resource and dumping it) costs about 0.2 ms; a thousand of them on every list
held the GIL for a quarter of a second while the fleet's heartbeats waited. Here the
rows are read as their stored text (no JSON decoded, no ORM objects), and a node's view
is built again only when that text or the deployments placed on it changed since the
last list; the rest are the JSON already encoded. A heartbeat changes its node's row, so
at 100 beats/s a list every second rebuilds about a hundred views, not a thousand.

The answer is the same list of views as before, in name order, and can be read a page at
a time (``limit``, and ``continue`` with the last name of the page before, as Kubernetes
lists do)::

    cache = NodeListCache()
    body, more = cache.page(session, limit=500, after=None)   # JSON bytes, the next token
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session, defer

from edgetier.control._db import NodeRow
from edgetier.control._reconcile import placements_by_node
from edgetier.control._views import node_view

__all__ = ["NodeListCache"]

# every column a node's view shows (``desired`` is not shown: it can be large)
_SHOWN = (
    NodeRow.name,
    NodeRow.tier,
    NodeRow.profile,
    cast(NodeRow.labels, Text),
    cast(NodeRow.capacity, Text),
    NodeRow.unschedulable,
    cast(NodeRow.conditions, Text),
    cast(NodeRow.enrolled_at, Text),
    cast(NodeRow.last_heartbeat, Text),
    cast(NodeRow.telemetry, Text),
    cast(NodeRow.workloads, Text),
    NodeRow.reported_generation,
    NodeRow.outbox_pending,
    NodeRow.desired_generation,
)


class NodeListCache:
    """Node views as encoded JSON, keyed on what they are built from (see the module)."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[tuple[Any, ...], bytes]] = {}
        self._lock = threading.Lock()
        self.built = 0  # views built (not taken from the cache), for tests and metrics

    def page(
        self, session: Session, *, limit: int | None = None, after: str | None = None
    ) -> tuple[bytes, str | None]:
        """The nodes after the name ``after``, at most ``limit`` of them, as a JSON list;
        and the name to continue after when more remain (else None)."""
        query = select(*_SHOWN).order_by(NodeRow.name)
        if after is not None:
            query = query.where(NodeRow.name > after)
        if limit is not None:
            query = query.limit(limit + 1)
        rows = session.execute(query).all()
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        on = placements_by_node(session)
        stale: list[str] = []
        parts: list[bytes] = []
        with self._lock:
            views = self._views
            for row in rows:
                key = (*row, tuple(on.get(row[0], ())))
                held = views.get(row[0])
                if held is not None and held[0] == key:
                    parts.append(held[1])
                    continue
                stale.append(row[0])
                parts.append(b"")
        if stale:
            built = self._build(session, stale, on)
            with self._lock:
                for i, row in enumerate(rows):
                    if not parts[i]:
                        key = (*row, tuple(on.get(row[0], ())))
                        parts[i] = built[row[0]]
                        self._views[row[0]] = (key, parts[i])
                self.built += len(built)
                if after is None and not more:  # a full list: forget removed nodes
                    for gone in self._views.keys() - {row[0] for row in rows}:
                        del self._views[gone]
        body = b"[" + b",".join(parts) + b"]"
        return body, (rows[-1][0] if more and rows else None)

    def _build(
        self, session: Session, names: list[str], on: dict[str, list[str]]
    ) -> dict[str, bytes]:
        built: dict[str, bytes] = {}
        query = select(NodeRow).where(NodeRow.name.in_(names)).options(defer(NodeRow.desired))
        for row in session.scalars(query):
            view = node_view(row, on.get(row.name, []))
            built[row.name] = json.dumps(view, separators=(",", ":"), ensure_ascii=False).encode()
        return built

"""The controller's database: tables (SQLAlchemy 2 ORM), sessions and migrations.

Everything the controller knows lives here; the process itself is stateless, so it can be
killed and restarted at any point. The schema uses portable types only (strings,
integers, floats, booleans, JSON, timestamps stored as UTC) and no dialect's own SQL, so
the same Alembic migrations serve SQLite (the default, one file under the data dir) and
PostgreSQL (psycopg 3; ``postgresql://`` URLs get that driver), where several controller
replicas share one database::

    db = Database("sqlite:///var/controller/controller.db")
    db.migrate()                       # alembic upgrade head
    with db.write() as session:        # one writer at a time on SQLite
        session.add(NodeRow(...))
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "Base",
    "Database",
    "DeploymentRow",
    "EventRow",
    "ModelRow",
    "ModelVersionRow",
    "NodeRow",
    "PipelineRow",
    "RolloutRow",
    "SequenceRow",
    "TelemetryRow",
    "TokenRow",
    "advisory_key",
    "driver_url",
    "libpq_conninfo",
    "utcnow",
]

MIGRATIONS = Path(__file__).with_name("_migrations")

# an autoincrementing 64-bit key; SQLite autoincrements only an INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")


def advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key (a signed 64-bit integer) for ``name``: the same in
    every replica, set apart from other applications' keys by the ``edgetier:`` prefix."""
    return zlib.crc32(f"edgetier:{name}".encode()) | (0x45540000 << 32)


WRITE_LOCK = advisory_key("write")
"""Held (per transaction) by every change that reconciles, so that on PostgreSQL two
replicas' reconcile passes never interleave: they run one after the other, each seeing
what the previous one committed."""

START_LOCK = advisory_key("start")
"""Held while a replica migrates the schema and checks the operator token."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back aware (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class TokenRow(Base):
    """Operator tokens, one-time enrolment tokens and node credentials, stored hashed."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # operator | enrol | node
    secret_sha256: Mapped[str] = mapped_column(String(64))
    node: Mapped[str | None] = mapped_column(String(63), index=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class NodeRow(Base):
    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16))
    profile: Mapped[str] = mapped_column(String(64))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    capacity: Mapped[dict[str, Any]] = mapped_column(default=dict)
    unschedulable: Mapped[bool] = mapped_column(Boolean, default=False)
    conditions: Mapped[list[Any]] = mapped_column(default=list)
    enrolled_at: Mapped[datetime]
    last_heartbeat: Mapped[datetime | None]
    telemetry: Mapped[dict[str, Any]] = mapped_column(default=dict)
    workloads: Mapped[list[Any]] = mapped_column(default=list)
    reported_generation: Mapped[int] = mapped_column(default=0)
    outbox_pending: Mapped[int] = mapped_column(default=0)
    desired_generation: Mapped[int] = mapped_column(default=0)
    desired: Mapped[list[Any]] = mapped_column(default=list)  # the Assignments, as JSON


class ModelRow(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[datetime]


class ModelVersionRow(Base):
    __tablename__ = "model_versions"

    model: Mapped[str] = mapped_column(
        String(63), ForeignKey("models.name", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    digest: Mapped[str] = mapped_column(String(71), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(200))
    precision: Mapped[str] = mapped_column(String(8))
    platform: Mapped[str] = mapped_column(String(64))
    flops: Mapped[float | None] = mapped_column(Float)
    weight_bytes: Mapped[int | None] = mapped_column(BigInteger)
    activation_bytes: Mapped[int | None] = mapped_column(BigInteger)
    throughput: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class PipelineRow(Base):
    __tablename__ = "pipelines"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    file: Mapped[str] = mapped_column(String(255), default="")
    content: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime]


class DeploymentRow(Base):
    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    generation: Mapped[int] = mapped_column(default=1)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    observed_generation: Mapped[int] = mapped_column(default=0)
    placements: Mapped[list[Any]] = mapped_column(default=list)
    satisfied: Mapped[bool] = mapped_column(Boolean, default=False)
    conditions: Mapped[list[Any]] = mapped_column(default=list)
    decision: Mapped[dict[str, Any]] = mapped_column(default=dict)
    explanation: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RolloutRow(Base):
    """A deployment's newest rollout (one per deployment; the event log keeps the story
    of the earlier ones). ``from_workload`` and ``to_workload`` are what the nodes run
    before and after (an Assignment's kind, model, config, pipeline and revision);
    ``updated`` the nodes told to run the new one so far."""

    __tablename__ = "rollouts"

    deployment: Mapped[str] = mapped_column(
        String(63), ForeignKey("deployments.name", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16))
    from_revision: Mapped[int] = mapped_column(default=0)
    to_revision: Mapped[int] = mapped_column(default=0)
    from_workload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    to_workload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    batches: Mapped[int] = mapped_column(default=1)
    batch: Mapped[int] = mapped_column(default=1)
    updated: Mapped[list[Any]] = mapped_column(default=list)
    reason: Mapped[str] = mapped_column(String(32), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    batch_started_at: Mapped[datetime]
    converged_at: Mapped[datetime | None]
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class EventRow(Base):
    """The append-only log: ``(source, sequence)`` is unique, ``id`` is the ingest order."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "sequence", name="uq_events_source_sequence"),
        Index("ix_events_kind", "kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(63))
    sequence: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255), default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime]


class SequenceRow(Base):
    """The last sequence stored per source: the controller's own counter, and for a node
    the ``acked_through`` of its records (events and telemetry samples alike)."""

    __tablename__ = "sequences"

    source: Mapped[str] = mapped_column(String(63), primary_key=True)
    last: Mapped[int] = mapped_column(BigInteger, default=0)


class TelemetryRow(Base):
    """A telemetry sample (``resolution_s`` 0) or the mean of ``count`` of them over one
    bucket of ``resolution_s`` seconds starting at ``time``."""

    __tablename__ = "telemetry"
    __table_args__ = (Index("ix_telemetry_node_resolution_time", "node", "resolution_s", "time"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(63))
    resolution_s: Mapped[int] = mapped_column(default=0)
    time: Mapped[datetime]
    count: Mapped[int] = mapped_column(default=1)
    utilisation: Mapped[float | None] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    power_w: Mapped[float | None] = mapped_column(Float)
    memory_used_bytes: Mapped[float | None] = mapped_column(Float)


class Database:
    """An engine, its sessions and its migrations.

    ``write()`` is the one way to change data. On SQLite it also holds an in-process lock,
    so that two request threads never race for SQLite's single writer (which would end in
    "database is locked"); on PostgreSQL the lock is not taken and the database's own
    transactions order the writers, except that ``write(serial=True)`` (every change that
    reconciles) first takes a transaction-level advisory lock shared by all replicas.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        url = driver_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgresql = url.startswith("postgresql")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            # as many kept connections as threads read at once (the operators' pool and
            # the node gate): an overflow connection is closed after use, and opening
            # one again (its pragmas included) cost a busy controller more than the read
            kwargs["pool_size"], kwargs["max_overflow"] = 24, 40
        else:
            # a replica outlives its database's restarts: a dead pooled connection is
            # replaced before use instead of failing the request
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"], kwargs["max_overflow"] = 10, 20
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock()

    @classmethod
    def sqlite(cls, path: Path) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}")

    def migrate(self) -> None:
        """Bring the schema to the newest migration (``alembic upgrade head``)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._write_lock, self.engine.begin() as connection:
            if self.is_postgresql:  # replicas started together migrate one after another
                connection.execute(select(func.pg_advisory_xact_lock(START_LOCK)))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self, *, serial: bool = False) -> Iterator[Session]:
        """A session committed on leaving (rolled back on an exception). ``serial``: on
        PostgreSQL, wait for every other serial transaction of any replica to end first."""
        with (
            self._write_lock if self.is_sqlite else nullcontext(),
            self._sessions() as session,
            session.begin(),
        ):
            if serial and self.is_postgresql:
                session.execute(select(func.pg_advisory_xact_lock(WRITE_LOCK)))
            yield session

    def close(self) -> None:
        self.engine.dispose()


def driver_url(url: str) -> str:
    """``url`` with its driver named: ``postgresql://`` means psycopg 3 here (SQLAlchemy's
    own default would be psycopg2, which EdgeTier does not install)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def libpq_conninfo(url: str) -> str:
    """The libpq connection string of a PostgreSQL SQLAlchemy URL (for psycopg itself)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers go on while one writer writes; foreign keys are off by default
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

"""The database: migrations equal the models and render for PostgreSQL too (portable
SQL); telemetry retention folds raw samples into bucket means and drops old ones; the
notifier wakes a parked long poll from another thread."""

from __future__ import annotations

import asyncio
import io
import threading
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import select

from edgetier.control._db import MIGRATIONS, Base, Database, TelemetryRow
from edgetier.control._notify import DesiredNotifier
from edgetier.control._telemetry import RetentionPolicy, add_sample, compact, history
from edgetier.errors import ConfigError


def test_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    db = Database.sqlite(tmp_path / "c.db")
    db.migrate()
    db.migrate()  # at every start: a no-op the second time
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    db.close()


@pytest.mark.parametrize("url", ["postgresql://user@host/edgetier", "sqlite:///x.db"])
def test_migrations_render_for_postgresql_and_sqlite(url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    out = io.StringIO()
    config.stdout = out
    with redirect_stdout(out):
        command.upgrade(config, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE nodes" in sql and "CREATE TABLE events" in sql
    if url.startswith("postgresql"):
        assert "JSON" in sql and "TIMESTAMP WITHOUT TIME ZONE" in sql
        assert "BIGSERIAL" in sql  # the 64-bit keys autoincrement on PostgreSQL
        assert "PRAGMA" not in sql and "AUTOINCREMENT" not in sql


def _at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 1, 10, minute, second, tzinfo=UTC)


def test_raw_samples_fold_into_minute_means_and_age_out(tmp_path: Path) -> None:
    db = Database.sqlite(tmp_path / "c.db")
    db.migrate()
    policy = RetentionPolicy(raw_retention_s=120, bucket_s=60, downsampled_retention_s=600)
    with db.write() as session:
        for second, (utilisation, temperature) in enumerate(
            [(0.2, 50.0), (0.4, None), (0.6, 70.0)]
        ):
            add_sample(
                session,
                "n",
                _at(0, second * 10),
                {"utilisation": utilisation, "temperature_c": temperature},
            )
        add_sample(session, "n", _at(1, 5), {"utilisation": 1.0, "power_w": "hot"})
        add_sample(session, "n", _at(4, 0), {"utilisation": 0.9})
    with db.write() as session:
        result = compact(session, _at(4, 30), policy)  # raw kept from 10:02:00 on
    assert (result.folded, result.buckets) == (4, 2)
    with db.read() as session:
        rows = history(session, "n")
    assert [(r["time"][11:19], r["resolution_s"], r["count"]) for r in rows] == [
        ("10:00:00", 60, 3),
        ("10:01:00", 60, 1),
        ("10:04:00", 0, 1),
    ]
    assert rows[0]["utilisation"] == pytest.approx(0.4)
    assert rows[0]["temperature_c"] == pytest.approx(60.0)  # the mean of the samples that had one
    assert rows[1]["power_w"] is None  # not a number: left out
    # a late sample (from an outbox) joins its bucket's mean
    with db.write() as session:
        add_sample(session, "n", _at(0, 50), {"utilisation": 0.8})
        compact(session, _at(4, 30), policy)
    with db.read() as session:
        first = history(session, "n")[0]
    assert (first["count"], first["utilisation"]) == (4, pytest.approx(0.5))
    with db.write() as session:
        result = compact(session, _at(11, 30), policy)  # past 600 s: the early buckets go
    with db.read() as session:
        left = session.scalars(select(TelemetryRow.time)).all()
    assert result.dropped == 2 and len(left) == 1
    db.close()


def test_retention_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="downsampled_retention_s must be >= raw_retention_s"):
        RetentionPolicy(raw_retention_s=100, downsampled_retention_s=10)
    with pytest.raises(ConfigError, match="bucket_s must be >= 1"):
        RetentionPolicy(bucket_s=0)


async def test_notifier_wakes_a_waiter_from_another_thread() -> None:
    notifier = DesiredNotifier()
    notifier.bind(asyncio.get_running_loop())
    waiter = asyncio.create_task(notifier.wait("n", 3, timeout_s=30))
    await asyncio.sleep(0.01)
    assert notifier.waiting == 1
    threading.Thread(target=notifier.publish, args=({"n": 4},)).start()
    assert await asyncio.wait_for(waiter, 10) is True
    assert notifier.waiting == 0
    assert await notifier.wait("n", 3, timeout_s=30) is True  # already newer: no wait
    assert await notifier.wait("n", 4, timeout_s=0.05) is False  # nothing new: times out
    notifier.publish({"n": 2})  # a late, older message never takes the node back
    await asyncio.sleep(0.01)
    assert await notifier.wait("n", 4, timeout_s=0.05) is False


async def test_closing_the_notifier_releases_every_waiter() -> None:
    notifier = DesiredNotifier()
    notifier.bind(asyncio.get_running_loop())
    waiters = [asyncio.create_task(notifier.wait(f"n{i}", 0, timeout_s=30)) for i in range(3)]
    await asyncio.sleep(0.01)
    notifier.close()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 10) == [False] * 3


def test_clock_helpers_store_utc(tmp_path: Path) -> None:
    db = Database.sqlite(tmp_path / "c.db")
    db.migrate()
    local = datetime(2026, 1, 1, 12, 0, tzinfo=UTC) + timedelta(hours=0)
    with db.write() as session:
        add_sample(session, "n", local.astimezone(), {"utilisation": 0.1})
    with db.read() as session:
        [row] = session.scalars(select(TelemetryRow)).all()
    assert row.time == local and row.time.tzinfo is not None
    db.close()

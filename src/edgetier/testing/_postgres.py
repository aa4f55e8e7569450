"""A throw-away PostgreSQL cluster for tests and benchmarks: ``initdb`` into a temporary
directory, ``pg_ctl`` start on a free port of 127.0.0.1, one database per test.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to a
system user made for it (``edgetier-pg``, no login, no home). Databases are copied from a
template (``CREATE DATABASE ... TEMPLATE``), a file copy of a few milliseconds, so a test
gets an empty, migrated database without running the migrations again::

    with PostgresCluster() as cluster:
        url = cluster.create_database("t1")     # postgresql+psycopg://edgetier@127.0.0.1:P/t1
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from edgetier.errors import StartupError
from edgetier.testing._ports import free_port

__all__ = ["PostgresCluster", "postgres_bin_dir"]

CLUSTER_USER = "edgetier-pg"
"""The system user that owns the cluster when the tests run as root."""

SUPERUSER = "edgetier"
"""The cluster's superuser (its role name; trust authentication on 127.0.0.1 only)."""

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def postgres_bin_dir() -> Path | None:
    """Where the server's binaries are: Debian's ``/usr/lib/postgresql/<version>/bin``
    (the newest), else the directory of an ``initdb`` on PATH next to a ``postgres``
    (a lone ``initdb`` may be a client package's stray wrapper); None when absent."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).resolve().parent))
    for candidate in candidates:
        directory = Path(candidate)
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


_NOT_DURABLE = ("fsync", "synchronous_commit", "full_page_writes")


class PostgresCluster:
    """A PostgreSQL cluster of its own on 127.0.0.1, removed on :meth:`stop`.

    Tuned for tests, not for keeping data: ``fsync``, ``synchronous_commit`` and
    ``full_page_writes`` are off (a crash of the machine may lose it, which a test's
    database may); ``durable=True`` keeps PostgreSQL's own defaults, as a benchmark that
    reports figures for a real server must."""

    def __init__(
        self, *, port: int | None = None, max_connections: int = 300, durable: bool = False
    ) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError(
                "PostgreSQL's server is not installed (no initdb, pg_ctl and postgres under "
                "/usr/lib/postgresql/*/bin or on PATH); make system-deps installs it"
            )
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.max_connections = max_connections
        self.durable = durable
        self._user = _cluster_user()
        # the cluster's user must reach its directory: under /tmp, not a TMPDIR of root's
        parent = "/tmp" if self._user is not None and Path("/tmp").is_dir() else None
        self.directory = Path(tempfile.mkdtemp(prefix="edgetier-pg-", dir=parent))
        self.data_dir = self.directory / "data"
        self.log_file = self.directory / "postgres.log"
        self._owned(self.directory)
        self._started = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """``initdb`` (first start only), then ``pg_ctl start``; returns once it accepts
        connections."""
        if not (self.data_dir / "PG_VERSION").is_file():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.directory}",
                "-c listen_addresses=127.0.0.1",
                f"-c max_connections={self.max_connections}",
            ]
            + ([] if self.durable else [f"-c {off}=off" for off in _NOT_DURABLE])
        )
        self._run(
            "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data_dir),
            "-l", str(self.log_file), "-o", options,
        )  # fmt: skip
        self._started = True

    def stop(self, *, remove: bool = True) -> None:
        """Stop at once (``-m immediate``: a test's data need no clean shutdown); remove the
        directory unless ``remove`` is False."""
        if self._started:
            self._run(
                "pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data_dir), check=False
            )
            self._started = False
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------

    def url(self, database: str = "postgres", *, driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of one of its databases (psycopg 3 by default)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template`` when given); its URL."""
        _check_name(name)
        sql = f'CREATE DATABASE "{name}"'
        if template is not None:
            _check_name(template)
            sql += f' TEMPLATE "{template}"'
        self.execute(sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending the sessions still connected to it."""
        _check_name(name)
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, sql: str, *params: Any, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement outside a transaction (as CREATE DATABASE needs); its rows."""
        import psycopg

        conninfo = self.url(database, driver="")
        with psycopg.connect(conninfo, autocommit=True) as connection:
            cursor = connection.execute(sql.encode(), params or None)  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []

    # -- plumbing --------------------------------------------------------------------

    def _owned(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self.bin_dir / tool), *args]
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=self.directory,
            timeout=60,
            env={**os.environ, "LC_ALL": "C"},
            **kwargs,
        )
        if check and done.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise StartupError(
                f"{tool} failed with status {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}\n{log}".rstrip()
            )


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"database name: must match {_NAME.pattern}, got {name!r}")


def _cluster_user() -> pwd.struct_passwd | None:
    """None when not root (the cluster runs as this user); else the system user made for
    it, created on first use."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(CLUSTER_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    done = subprocess.run(
        [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", nologin, CLUSTER_USER],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if done.returncode not in (0, 9):  # 9: made meanwhile by another process
        raise StartupError(
            f"cannot create the user {CLUSTER_USER} that runs PostgreSQL (it refuses root): "
            f"{done.stderr.strip()}"
        )
    return pwd.getpwnam(CLUSTER_USER)

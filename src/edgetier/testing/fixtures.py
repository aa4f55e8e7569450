"""pytest fixtures over :mod:`edgetier.testing`, loaded by a suite's conftest.py::

pytest_plugins = ["edgetier.testing.fixtures"]

def test_publish(mosquitto):            # a broker on a free port, stopped afterwards
    publish_to(f"127.0.0.1:{mosquitto.port}")

def test_store(postgres_url):           # an empty database of a cluster shared by the session
    Database(postgres_url).migrate()
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetier.testing._models import make_random_classifier, make_random_detector
from edgetier.testing._postgres import PostgresCluster, postgres_bin_dir
from edgetier.testing._server import RunningServer, demo_repository, running_server
from edgetier.testing._services import Mosquitto, RtspRelay


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto broker on a free port of 127.0.0.1."""
    with Mosquitto() as broker:
        yield broker


_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the test session (skips where PostgreSQL is not installed:
    ``make system-deps`` installs it)."""
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (make system-deps installs it)")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database of :func:`postgres`, dropped after."""
    name = f"test_{next(_databases)}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Runs a controller's test twice: None (the controller's default, SQLite in its data
    dir), then the URL of a fresh PostgreSQL database (:func:`postgres_url`)."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def rtsp_relay() -> Iterator[RtspRelay]:
    """An RTSP relay (rtsp-server-perl): publish on one port, play on another."""
    with RtspRelay() as relay:
        yield relay


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    """A fresh copy of the cheap demo models (``simple``, ``small``, ``identity``)."""
    return demo_repository(tmp_path / "repo")


@pytest.fixture
def server(demo_repo: Path) -> Iterator[RunningServer]:
    """An inference server on free ports serving :func:`demo_repo`."""
    with running_server(demo_repo) as running:
        yield running


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A folder with ``det.onnx`` and ``cls.onnx``: a random detector and classifier."""
    make_random_detector(tmp_path / "det.onnx")
    make_random_classifier(tmp_path / "cls.onnx")
    return tmp_path

"""pytest fixtures over :mod:`edgetier.testing`, loaded by a suite's conftest.py::

pytest_plugins = ["edgetier.testing.fixtures"]

def test_publish(mosquitto):            # a broker on a free port, stopped afterwards
    publish_to(f"127.0.0.1:{mosquitto.port}")
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetier.testing._models import make_random_classifier, make_random_detector
from edgetier.testing._server import RunningServer, demo_repository, running_server
from edgetier.testing._services import Mosquitto, RtspRelay


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto broker on a free port of 127.0.0.1."""
    with Mosquitto() as broker:
        yield broker


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

"""running_server fails clearly when the server cannot start, and serves when it can."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from edgetier.errors import StartupError
from edgetier.testing import demo_repository, free_port, running_server


def test_running_server_names_a_port_in_use(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("identity",))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(StartupError, match=r"failed to start: .*" + str(port)),
            running_server(repo, http_port=port),
        ):
            pass


def test_running_server_serves_the_repository(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("identity",))
    with running_server(repo) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert client.is_model_ready("identity")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))

"""Model control mode poll: new versions and removed models are picked up by themselves."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from edgetier.testing import demo_repository, running_server

pytestmark = pytest.mark.integration


def _eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_poll_mode_loads_new_versions_and_unloads_removed_models(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple", "small"))
    with running_server(repo, model_control_mode="poll", repository_poll_secs=0.2) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert client.is_model_ready("simple", "1") and client.is_model_ready("small")

        shutil.copytree(repo / "simple" / "1", repo / "simple" / "2")
        assert _eventually(lambda: client.is_model_ready("simple", "2"))
        inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(np.ones((1, 16), np.int32))
        result = client.infer("simple", inputs)
        assert result.get_response()["model_version"] == "2"
        assert (result.as_numpy("OUTPUT0") == 2).all()

        shutil.rmtree(repo / "small")
        assert _eventually(lambda: not client.is_model_ready("small"))
        assert client.is_model_ready("simple", "2")

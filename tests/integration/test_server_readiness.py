"""Readiness means what Triton means (every model that should be loaded is ready) unless
the user opts out; a failed reload in poll mode is logged once per change."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from edgetier.testing import ServerProcess, demo_repository, running_server

pytestmark = pytest.mark.integration


def add_broken_model(repo: Path, name: str = "broken") -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.onnx").write_bytes(b"this is not an onnx model")


def test_a_model_that_failed_to_load_makes_the_server_not_ready(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple",))
    add_broken_model(repo)
    with running_server(repo) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc_ = grpcclient.InferenceServerClient(server.grpc_url)
        assert http.is_server_live() and grpc_.is_server_live()
        assert not http.is_server_ready() and not grpc_.is_server_ready()
        assert http.is_model_ready("simple")  # the others serve all the same
    with running_server(repo, strict_readiness=False) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        assert http.is_server_ready()
        assert grpcclient.InferenceServerClient(server.grpc_url).is_server_ready()


def test_explicit_mode_waits_for_the_models_it_was_asked_to_load(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple", "small"))
    add_broken_model(repo)
    with running_server(repo, model_control_mode="explicit", load_models=["simple"]) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        assert http.is_server_ready()  # 'small' and 'broken' were not asked for
        with pytest.raises(InferenceServerException, match="broken"):
            http.load_model("broken")
        assert not http.is_server_ready()
        http.unload_model("broken")  # no longer wanted
        assert http.is_server_ready()
        http.load_model("small")
        http.unload_model("simple")
        assert http.is_server_ready()


def test_serve_no_strict_readiness_is_ready_without_its_models(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple",))
    add_broken_model(repo)
    with ServerProcess(repo, tmp_path / "strict") as served:
        assert served.get("/v2/health/ready")[0] == 503
    with ServerProcess(repo, tmp_path / "lenient", "--no-strict-readiness") as served:
        assert served.get("/v2/health/ready")[0] == 200


def test_a_failed_reload_in_poll_mode_is_logged_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple",))
    caplog.set_level(logging.INFO, logger="edgetier.server")

    def failures() -> int:
        return sum("failed to load" in r.getMessage() for r in caplog.records)

    def eventually(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not check():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    with running_server(repo, model_control_mode="poll", repository_poll_secs=0.1) as server:
        repository = server.server.manager.repository
        scans = [0]
        fingerprint = repository.fingerprint

        def counted(name: str) -> str:
            scans[0] += 1
            return fingerprint(name)

        repository.fingerprint = counted  # type: ignore[method-assign]
        http = httpclient.InferenceServerClient(server.http_url)
        shutil.copytree(repo / "simple" / "1", repo / "simple" / "2")
        (repo / "simple" / "2" / "model.onnx").write_bytes(b"broken version 2")
        eventually(lambda: failures() == 1, "the failed reload was never logged")
        seen = scans[0]
        eventually(lambda: scans[0] >= seen + 10, "the repository was not polled")
        assert failures() == 1  # ten polls of the same files: not tried, not logged again
        assert http.is_server_ready() and http.is_model_ready("simple", "1")  # v1 serves
        (repo / "simple" / "2" / "model.onnx").write_bytes(b"broken version 2, again")
        eventually(lambda: failures() == 2, "the second change was never tried")
        seen = scans[0]
        eventually(lambda: scans[0] >= seen + 10, "the repository was not polled")
        assert failures() == 2

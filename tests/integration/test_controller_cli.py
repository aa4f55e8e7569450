"""`edgetier controller` as a process and the fleet commands against it: tokens, model
push, deploy apply/status/explain/delete, nodes ls/show/drain/uncordon, with tables and
--json; SIGTERM with a long poll open; a restart that keeps the fleet."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from edgetier.cli._app import app
from edgetier.testing import eventually as _eventually
from edgetier.testing import free_port, make_random_classifier, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fleet" / "traffic.yaml"
runner = CliRunner()


@contextmanager
def _controller_process(
    data_dir: Path, port: int, database_url: str | None
) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-c", "from edgetier.cli import main; main()", "controller",
        "--data-dir", str(data_dir), "--port", str(port), "--node-timeout-s", "60",
    ]  # fmt: skip
    if database_url is not None:
        command += ["--database-url", database_url]
    log = (data_dir.parent / "controller.log").open("a")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(
            port, timeout_s=30, alive=lambda: None if process.poll() is None else "exited"
        )
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        log.close()


def _cli(*args: str, env: dict[str, str]) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", **env})
    assert result.exit_code == 0, result.output
    return result.output


def _enrol(url: str, env: dict[str, str], name: str, tier: str, profile: str) -> dict[str, str]:
    token = json.loads(_cli("tokens", "create", "--json", env=env))["token"]
    answer = httpx.post(
        f"{url}/v1/enrol", json={"token": token, "name": name, "tier": tier, "profile": profile}
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['credential']}"}


def test_the_fleet_commands_against_a_controller_process(
    tmp_path: Path, database_url: str | None
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "controller"
    with _controller_process(data_dir, port, database_url) as process:
        token_file = data_dir / "operator-token"
        env = {"EDGETIER_CONTROLLER": url, "EDGETIER_TOKEN": token_file.read_text().strip()}
        edge = _enrol(url, env, "edge-1", "edge", "jetson-agx-orin-64gb")
        region = _enrol(url, env, "region-1", "region", "a100-sxm4-80gb")
        for name, headers in (("edge-1", edge), ("region-1", region)):
            httpx.post(
                f"{url}/v1/nodes/{name}/heartbeat",
                json={"telemetry": {"temperature_c": 50}},
                headers=headers,
            )

        model_dir = tmp_path / "repo" / "detector"
        make_random_classifier(model_dir / "1" / "model.onnx")
        (model_dir / "config.yaml").write_text(
            yaml.safe_dump({"name": "detector", "max_batch_size": 8})
        )
        pushed = _cli("model", "push", str(model_dir), "--name", "detector", env=env)
        assert "detector version 1: sha256:" in pushed and "MFLOP/inference" in pushed
        again = json.loads(
            _cli("model", "push", str(model_dir), "--name", "detector", "--json", env=env)
        )
        assert again["version"] == 1 and again["config"]["max_batch_size"] == 8

        applied = _cli("deploy", "apply", "-f", str(EXAMPLE), env=env)
        assert "deployment traffic applied (generation 1)" in applied
        status = json.loads(_cli("deploy", "status", "traffic", "--json", env=env))
        placed = {p["node"] for p in status["status"]["placements"]}
        assert placed and placed <= {"edge-1", "region-1"}
        table = _cli("deploy", "status", env=env)
        assert "traffic" in table and "pipeline traffic-synthetic" in table
        explained = _cli("deploy", "explain", "traffic", env=env)
        assert "node(s) considered" in explained
        desired = httpx.get(
            f"{url}/v1/nodes/{sorted(placed)[0]}/desired",
            headers=edge if "edge-1" in placed else region,
        )
        assignment = desired.json()["assignments"][0]
        assert (
            assignment["kind"] == "pipeline"
            and assignment["pipeline"]["name"] == "traffic-synthetic"
        )

        listing = _cli("nodes", "ls", env=env)
        assert "edge-1" in listing and "region-1" in listing and "jetson-agx-orin-64gb" in listing
        shown = _cli("nodes", "show", "edge-1", env=env)
        assert "conditions" in shown and "HeartbeatReceived" in shown
        drained = _cli("nodes", "drain", "edge-1", env=env)
        assert "node edge-1 drained" in drained
        nodes = json.loads(_cli("nodes", "ls", "--json", env=env))
        assert {n["metadata"]["name"]: n["spec"]["unschedulable"] for n in nodes} == {
            "edge-1": True,
            "region-1": False,
        }
        assert "edge-1" not in {
            p["node"]
            for p in json.loads(_cli("deploy", "status", "traffic", "--json", env=env))["status"][
                "placements"
            ]
        }
        assert "schedulable again" in _cli("nodes", "uncordon", "edge-1", env=env)

        tokens = json.loads(_cli("tokens", "ls", "--json", env=env))
        enrol_id = next(t["id"] for t in tokens if t["kind"] == "enrol")
        assert f"revoked enrol token {enrol_id}" in _cli("tokens", "revoke", enrol_id, env=env)
        assert "deployment traffic deleted" in _cli("deploy", "delete", "traffic", env=env)

        # refusals: one clear line, exit 1
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "apiVersion: edgetier/v1\nkind: Deployment\nmetadata: {name: x}\n"
            "spec: {model: {name: m}, replicas: 0, colour: red}\n"
        )
        result = runner.invoke(
            app, ["deploy", "apply", "-f", str(bad)], env={"COLUMNS": "200", **env}
        )
        assert result.exit_code == 1
        assert "spec.replicas: must be >= 1, got 0" in result.output
        assert "spec.colour: unknown field" in result.output
        result = runner.invoke(
            app,
            ["nodes", "ls", "--token", "eto_x.y"],
            env={"COLUMNS": "200", "EDGETIER_CONTROLLER": url},
        )
        assert result.exit_code == 1 and "unknown token x (HTTP 401)" in result.output

        # SIGTERM with a long poll parked: the controller releases it and exits cleanly
        answers: list[int] = []
        etag = httpx.get(f"{url}/v1/nodes/edge-1/desired", headers=edge).headers["etag"]

        def long_poll() -> None:
            answer = httpx.get(
                f"{url}/v1/nodes/edge-1/desired",
                params={"wait_s": 60},
                headers={**edge, "If-None-Match": etag},
                timeout=90,
            )
            answers.append(answer.status_code)

        poll = threading.Thread(target=long_poll)
        poll.start()
        metrics = f"{url}/metrics"
        assert _eventually(lambda: "edgetier_controller_long_polls 1.0" in httpx.get(metrics).text)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        poll.join(30)
        assert not poll.is_alive() and answers == [304]  # released, not cut off

    # started again on the same data dir: the fleet is still there
    with _controller_process(data_dir, port, database_url):
        nodes = json.loads(_cli("nodes", "ls", "--json", env=env))
        assert sorted(n["metadata"]["name"] for n in nodes) == ["edge-1", "region-1"]
        assert json.loads(_cli("deploy", "status", "--json", env=env)) == []

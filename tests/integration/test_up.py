"""`edgetier up` as a new user runs it (issue 14, acceptance 4): the fleet comes up and
prints where to look; draining the node that runs the traffic pipeline moves it; Ctrl-C
(SIGTERM) stops every process it started."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from edgetier.testing import free_port, free_tcp_block

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _until(check: Any, what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except (httpx.HTTPError, KeyError):
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_runs_the_fleet_a_drain_moves_traffic_and_ctrl_c_stops_all(tmp_path: Path) -> None:
    port, base = free_port(), free_tcp_block(300)
    out = (tmp_path / "up.out").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edgetier.cli import main; main()", "up",
         "--port", str(port), "--port-base", str(base), "--data-dir", str(tmp_path / "var"),
         "--no-broker"],
        stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    closing: list[httpx.Client] = []
    try:
        _until(
            lambda: "EdgeTier is up" in (tmp_path / "up.out").read_text() or proc.poll(),
            "EdgeTier is up",
            240,
        )
        text = (tmp_path / "up.out").read_text()
        assert proc.poll() is None, text
        assert "edgetier deploy explain traffic" in text and "edgetier nodes drain" in text
        token = (tmp_path / "var" / "controller" / "operator-token").read_text().strip()
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        )
        closing.append(api)
        nodes = {n["metadata"]["name"]: n["spec"]["tier"] for n in api.get("/v1/nodes").json()}
        assert nodes == {"local": "edge", "nano-1": "terminal", "region-1": "region"}
        [first] = [
            p["node"] for p in api.get("/v1/deployments/traffic").json()["status"]["placements"]
        ]
        assert f"traffic    on {first}" in text
        assert api.post(f"/v1/nodes/{first}/drain").status_code == 200

        def moved() -> bool:
            status = api.get("/v1/deployments/traffic").json()["status"]
            nodes = [p["node"] for p in status["placements"]]
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"]
            )
            return bool(nodes) and first not in nodes and ready

        _until(moved, "the traffic pipeline running elsewhere", 120)
        served = httpx.get(f"http://127.0.0.1:{base}/v2/models/simple/ready")
        assert served.status_code == 200
    finally:
        for client in closing:
            client.close()
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        out.close()
    assert code == 0
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]

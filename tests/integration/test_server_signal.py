"""`edgetier serve` as a process: --print-examples, structured logs, SIGTERM drains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from edgetier.testing import ServerProcess, demo_repository, edit_config

pytestmark = pytest.mark.integration


def test_sigterm_drains_requests_in_flight(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("small", "simple"))
    # requests wait 1.5 s in the queue, so they are in flight when SIGTERM comes
    edit_config(repo, "small", dynamic_batching={"max_queue_delay_microseconds": 1_500_000})
    options = ["--log-format", "json", "--print-examples"]
    with ServerProcess(repo, tmp_path / "logs", *options) as served:
        client = grpcclient.InferenceServerClient(served.grpc_url)
        assert client.is_server_ready()
        tensor = grpcclient.InferInput("input", [1, 16], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
        results: list[object] = []

        def call() -> None:
            try:
                results.append(client.infer("small", [tensor]).as_numpy("output"))
            except Exception as exc:
                results.append(exc)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        returncode = served.terminate()
        for thread in threads:
            thread.join(30)
    out, err = served.out_path.read_text(), served.err
    assert returncode == 0, err
    assert len(results) == 3
    assert all(isinstance(r, np.ndarray) and r.shape == (1, 4) for r in results), results
    assert "curl -s -X POST" in out and "tritonclient.grpc" in out
    assert f"edgetier bench server grpc://127.0.0.1:{served.grpc_port} --model resnet50" in out
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records, err
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any("draining" in r["message"] for r in records)


def test_serve_rejects_a_missing_repository(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("edgetier")
    result = subprocess.run(
        [str(exe), "serve", "--model-repository", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, COLUMNS="200"),
    )
    assert result.returncode == 2
    assert "is not a directory" in result.stderr

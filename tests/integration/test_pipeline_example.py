"""The shipped example, end to end: `edgetier pipeline run` with events on a real broker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgetier.cli._app import app
from edgetier.pipeline import package_models_dir
from edgetier.testing import (
    Mosquitto,
    free_port,
    make_random_classifier,
    make_random_detector,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "traffic-synthetic.yaml"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="mosquitto is not installed (make system-deps)",
    ),
]


@pytest.fixture(autouse=True)
def _models(tmp_path: Path, monkeypatch: Any) -> None:
    """Use the shipped models; where a checkout has not built them, stand-ins of the same
    layout (random weights) so that the plumbing is still tested end to end."""
    shipped = package_models_dir()
    if (shipped / "detector.onnx").is_file() and (shipped / "colour.onnx").is_file():
        return
    folder = tmp_path / "stand-in-models"
    make_random_detector(folder / "detector.onnx", input_size=128)
    make_random_classifier(folder / "colour.onnx", names=("red", "white", "black", "blue"))
    monkeypatch.setattr("edgetier.pipeline._models.package_models_dir", lambda: folder)


def test_example_validates_and_graphs() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["pipeline", "validate", str(EXAMPLE)]).exit_code == 0
    out = runner.invoke(app, ["pipeline", "graph", str(EXAMPLE)]).output
    assert "detect [detector: package://detector" in out and "mqtt" in out


def test_example_runs_with_events_on_the_broker(tmp_path: Path, monkeypatch: Any) -> None:
    import paho.mqtt.client as mqtt

    data = yaml.safe_load(EXAMPLE.read_text())
    with Mosquitto() as broker:
        for sink in data["sinks"]:  # the same pipeline on free ports and temp files
            if sink["kind"] == "mqtt":
                sink["port"] = broker.port
            elif sink["kind"] == "opcua":
                sink["endpoint"] = f"opc.tcp://127.0.0.1:{free_port()}/edgetier/"
            elif sink["kind"] == "prometheus":
                sink["port"] = 0
        data["stages"][-1]["summary_interval_s"] = 0.2
        data["sources"][0]["scene"]["duration_s"] = 2
        path = tmp_path / "traffic.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.chdir(tmp_path)
        received: list[dict[str, Any]] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_message = lambda c, u, m: received.append(json.loads(m.payload))
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("edgetier/+/traffic-synthetic/#", qos=1)
        sub.loop_start()
        try:
            result = CliRunner().invoke(
                app, ["pipeline", "run", str(path), "--frames", "12", "--log-level", "WARNING"]
            )
            assert result.exit_code == 0, result.output
            mqtt_kinds = next(s["kinds"] for s in data["sinks"] if s["kind"] == "mqtt")
            written = Path("var/pipelines/traffic-synthetic/events.jsonl").read_text()
            every = [json.loads(x) for x in written.splitlines()]
            assert "detections" in {e["kind"] for e in every}  # the JSONL sink takes all kinds
            sent = [e for e in every if e["kind"] in mqtt_kinds]
            import time

            deadline = time.monotonic() + 10
            while {e["id"] for e in received} < {e["id"] for e in sent}:
                assert time.monotonic() < deadline, "events missing on the broker"
                time.sleep(0.1)
        finally:
            sub.loop_stop()
            sub.disconnect()
    kinds = {e["kind"] for e in received}
    assert {"source_status", "counts"} <= kinds
    assert {e["stream"] for e in received} == {"road-0", "road-1"}

from __future__ import annotations

import json
from pathlib import Path

from test_advisor import _model
from typer.testing import CliRunner

from edgetier.cli import app

runner = CliRunner()


def test_probe_json_on_this_machine() -> None:
    result = runner.invoke(app, ["hw", "probe", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["cpu"]["logical_cores"] >= 1 and data["profile"]


def test_top_once_json() -> None:
    result = runner.invoke(app, ["hw", "top", "--once", "--json", "--interval-s", "0.05"])
    assert result.exit_code == 0, result.output
    sample = json.loads(result.output.strip().splitlines()[-1])
    assert "cpu_percent" in sample and "gpus" in sample


def test_advise_and_thermal_sim(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx")
    args = [
        "hw",
        "advise",
        "--model",
        str(model),
        "--streams",
        "2",
        "--fps",
        "10",
        "--latency-ms",
        "100",
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    verdicts = json.loads(result.output)
    assert any(v["label"].startswith("this machine") for v in verdicts)
    assert all(v["explanation"] for v in verdicts)
    bad = runner.invoke(app, [*args, "--precision", "fp8"])
    assert bad.exit_code != 0 and "fp8" in bad.output
    sim = runner.invoke(app, ["hw", "thermal-sim", "--json", "--duration-s", "1200"])
    assert sim.exit_code == 0 and json.loads(sim.output)["simulated"] is True


def test_power_commands_degrade_plainly(tmp_path: Path) -> None:
    record = tmp_path / "rec.json"
    result = runner.invoke(app, ["hw", "power", "restore", "--record", str(record)])
    assert result.exit_code == 0 and "nothing to restore" in result.output
    bad = runner.invoke(app, ["hw", "power", "set", "--record", str(record)])
    assert bad.exit_code != 0

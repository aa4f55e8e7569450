from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
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


def _tegrastats_line(cpu_c: float) -> str:
    # A real Nano line; PMIC reads a constant 100 C and must not drive the governor.
    return (
        "RAM 2511/3956MB (lfb 7x2MB) SWAP 0/1978MB (cached 0MB) CPU [41%@1479,38%@1479,off,off] "
        f"EMC_FREQ 21%@1600 GR3D_FREQ 99%@921 APE 25 PLL@45C CPU@{cpu_c}C PMIC@100C GPU@46.5C "
        "AO@52C thermal@46.75C POM_5V_IN 7335/4882 POM_5V_GPU 3546/1773 POM_5V_CPU 1189/800"
    )


def test_govern_replays_a_tegrastats_log(tmp_path: Path) -> None:
    log = tmp_path / "tegrastats.log"
    log.write_text("\n".join(_tegrastats_line(t) for t in (70, 80, 86, 88, 75, 75)) + "\n")
    args = ["hw", "govern", "--recorded", str(log), "--min-dwell-s", "0", "--hold-s", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    events = [json.loads(ln) for ln in result.stdout.splitlines()]
    assert [(e["action"], e["temperature_c"]) for e in events] == [
        ("step_down", 86.0),
        ("step_down", 88.0),
        ("step_up", 75.0),
        ("step_up", 75.0),
    ]
    assert events[0]["time_s"] == 2.0 and events[-1]["to_level"] == "full"


def test_govern_without_a_temperature_sensor_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgetier.hardware as hw

    class NoSensors:
        def sample(self) -> Any:
            return SimpleNamespace(time_s=0.0, temperatures_c={"PMIC": 100.0})

    monkeypatch.setattr(hw, "TelemetrySampler", NoSensors)
    result = runner.invoke(app, ["hw", "govern", "--count", "1"])
    assert result.exit_code == 2
    assert "no temperature sensor" in result.output and "PMIC" in result.output

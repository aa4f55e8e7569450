"""`edgetier model ...` in process with typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgetier.cli._app import app
from edgetier.runtime import ModelRepository
from edgetier.synthetic import build_demo_repository

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["convert"], ["quantize"], ["demo"], ["list"]])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, ["model", *command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_demo_then_list(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    result = runner.invoke(app, ["model", "demo", str(repo), "--model", "simple"])
    assert result.exit_code == 0, result.output
    assert "simple: built" in result.output
    again = runner.invoke(app, ["model", "demo", str(repo), "--model", "simple"])
    assert "simple: up to date" in again.output

    listed = runner.invoke(app, ["model", "list", str(repo), "--config"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "INPUT0 INT32[-1,16]" in listed.output
    assert "max_batch_size: 8" in listed.output


def test_list_shows_a_broken_model_goes_on_and_exits_1(tmp_path: Path) -> None:
    build_demo_repository(tmp_path, models=["small"])
    assert runner.invoke(app, ["model", "list", str(tmp_path)]).exit_code == 0
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.yaml").write_text("max_batch_size: -2\n")
    result = runner.invoke(app, ["model", "list", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "max_batch_size: must be >= 0, got -2" in result.output.replace("\n", "")
    assert "small" in result.output


def test_convert_fp16(tmp_path: Path) -> None:
    build_demo_repository(tmp_path, models=["small"])
    result = runner.invoke(app, ["model", "convert", "--fp16", str(tmp_path / "small")])
    assert result.exit_code == 0, result.output
    assert "version 2, FP16) from version 1 (FP32); it loads" in result.output
    assert ModelRepository(tmp_path).versions("small") == [1, 2]


def test_convert_needs_a_precision(tmp_path: Path) -> None:
    build_demo_repository(tmp_path, models=["small"])
    result = runner.invoke(app, ["model", "convert", str(tmp_path / "small")])
    assert result.exit_code == 1
    assert "--fp16" in result.output
    assert ModelRepository(tmp_path).versions("small") == [1]


def test_quantize_int8(tmp_path: Path) -> None:
    build_demo_repository(tmp_path, models=["small"])
    calibration = tmp_path / "calib"
    calibration.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(calibration / f"{i}.npy", rng.standard_normal((16,)).astype(np.float32))
    args = ["model", "quantize", "--int8", "--calibration", str(calibration)]
    result = runner.invoke(app, [*args, str(tmp_path / "small")])
    assert result.exit_code == 0, result.output
    assert "version 2, INT8 QDQ) from version 1 (FP32); it loads" in result.output
    assert ModelRepository(tmp_path).versions_to_load("small") == [2]


def test_quantize_errors_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    build_demo_repository(tmp_path, models=["small"])
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = runner.invoke(app, ["model", "quantize", "--int8", str(tmp_path / "small")])
    assert missing.exit_code == 1
    assert "--calibration DIR is required" in missing.output
    result = runner.invoke(
        app,
        ["model", "quantize", "--int8", "--calibration", str(empty), str(tmp_path / "small")],
    )
    assert result.exit_code == 1
    assert "holds no calibration file" in result.output
    assert "Traceback" not in result.output


def test_unknown_model_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "convert", "--fp16", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "is not a model directory" in result.output


def _calibration(tmp_path: Path) -> Path:
    calibration = tmp_path / "calib"
    calibration.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(calibration / f"{i}.npy", rng.standard_normal((16,)).astype(np.float32))
    return calibration


def test_convert_then_quantize_then_serve(tmp_path: Path) -> None:
    from tritonclient.grpc import InferenceServerClient, InferInput

    from edgetier.testing import edit_config, running_server

    repo = tmp_path / "repo"
    build_demo_repository(repo, models=["small"])
    model = str(repo / "small")
    assert runner.invoke(app, ["model", "convert", "--fp16", model]).exit_code == 0
    args = ["model", "quantize", "--int8", "--calibration", str(_calibration(tmp_path)), model]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "version 3, INT8 QDQ) from version 1 (FP32); it loads" in result.output
    edit_config(repo, "small", version_policy={"all": {}})
    with running_server(repo) as server:
        client = InferenceServerClient(server.grpc_url)
        for version in ("1", "2", "3"):
            assert client.is_model_ready("small", version)
            x = InferInput("input", [2, 16], "FP32")
            x.set_data_from_numpy(np.ones((2, 16), np.float32))
            out = client.infer("small", [x], model_version=version).as_numpy("output")
            assert out.shape == (2, 4)
        client.close()


def test_quantize_whose_output_cannot_load_fails(tmp_path: Path) -> None:
    build_demo_repository(tmp_path, models=["small"])
    model = str(tmp_path / "small")
    assert runner.invoke(app, ["model", "convert", "--fp16", model]).exit_code == 0
    calibration = str(_calibration(tmp_path))
    args = ["model", "quantize", "--int8", "--calibration", calibration, "--from-version", "2"]
    result = runner.invoke(app, [*args, model], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "error: version 3 was not added" in text
    assert "the new model does not load" in text and "INVALID_GRAPH" in text
    assert ModelRepository(tmp_path).versions("small") == [1, 2]

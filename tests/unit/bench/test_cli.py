from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetier.bench import BenchReport
from edgetier.cli._app import app

runner = CliRunner()


def test_bench_model_in_process(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            "bench",
            "model",
            str(tiny_model),
            "--batch-sizes",
            "1,4",
            "--count",
            "30",
            "--warmup-s",
            "0.01",
            "--no-progress",
            "--no-energy",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = BenchReport.read(out.with_suffix(".json"))
    assert report.kind == "model" and report.model and report.model.name == "tiny"
    assert [r.batch_size for r in report.results] == [1, 4]
    assert all(r.requests == 30 and r.system == "onnxruntime" for r in report.results)
    assert all(r.provider == "CPUExecutionProvider" for r in report.results)
    assert "| onnxruntime |" in result.output
    assert out.with_suffix(".md").read_text().count("| onnxruntime |") == 2
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["results"][0]["energy_j_per_inference"] is None


def test_bench_model_skips_unavailable_precision(tiny_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "model",
            str(tiny_model),
            "--precisions",
            "fp32,int8",
            "--count",
            "5",
            "--warmup-s",
            "0",
            "--no-progress",
            "--no-energy",
            "--no-plots",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = BenchReport.read(tmp_path / "m.json")
    assert {r.precision for r in report.results} == {"fp32"}
    assert any("int8: skipped" in n for n in report.notes)


def test_bench_model_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "model", str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2
    assert "not found" in result.output


def test_bench_server_bad_url() -> None:
    result = runner.invoke(app, ["bench", "server", "localhost:8001", "--model", "m"])
    assert result.exit_code == 2
    assert "grpc://host:port" in result.output


def test_bench_server_json_over_grpc_refused() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "server",
            "grpc://127.0.0.1:1",
            "--model",
            "m",
            "--tensors",
            "json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    assert "HTTP only" in result.output


def test_perf_analyzer_absent_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    result = runner.invoke(
        app, ["bench", "server", "grpc://127.0.0.1:1", "--model", "m", "--perf-analyzer"]
    )
    assert result.exit_code == 2
    assert "perf_analyzer is not on PATH" in result.output


def test_compare_unknown_system() -> None:
    result = runner.invoke(app, ["bench", "compare", "x.onnx", "--systems", "onnxruntime,vllm"])
    assert result.exit_code == 2
    assert "vllm" in result.output


def test_compare_missing_peer_gives_install_command(tiny_model: Path, tmp_path: Path) -> None:
    # An interpreter that cannot import the peer: this one, with an empty module path.
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    fake.chmod(0o755)
    result = runner.invoke(
        app,
        [
            "bench",
            "compare",
            str(tiny_model),
            "--systems",
            "pytriton",
            "--peer-python",
            str(fake),
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    assert "pip install" in result.output and "nvidia-pytriton" in result.output


def test_pipeline_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "pipeline", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2
    assert "not found" in result.output


def _repo_with_own_config(tiny_model: Path, root: Path) -> Path:
    (root / "tiny" / "1").mkdir(parents=True)
    (root / "tiny" / "1" / "model.onnx").write_bytes(tiny_model.read_bytes())
    (root / "tiny" / "config.yaml").write_text(
        "max_batch_size: 4\ndynamic_batching: {max_queue_delay_microseconds: 1000}\n"
    )
    return root / "tiny"


def test_compare_batch_sizes_above_the_models_max_are_refused(
    tiny_model: Path, tmp_path: Path
) -> None:
    folder = _repo_with_own_config(tiny_model, tmp_path / "repo")
    result = runner.invoke(
        app, ["bench", "compare", str(folder), "--systems", "onnxruntime", "--no-progress"]
    )
    assert result.exit_code == 2
    assert "batch sizes [8] exceed the max_batch_size 4 (config.yaml" in result.output
    assert "--batch-sizes up to 4 or --max-batch-size" in result.output


def test_compare_options_override_the_config_and_the_report_says_so(
    tiny_model: Path, tmp_path: Path
) -> None:
    folder = _repo_with_own_config(tiny_model, tmp_path / "repo")
    out = tmp_path / "cmp"
    args = ["bench", "compare", str(folder), "--systems", "onnxruntime", "--batch-sizes", "8"]
    args += ["--max-batch-size", "8", "--concurrency", "1", "--duration-s", "0.1"]
    args += ["--warmup-s", "0", "--no-energy", "--no-progress", "--no-plots", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = BenchReport.read(out.with_suffix(".json"))
    assert report.settings["max_batch_size"] == {"value": 8, "from": "option"}
    assert report.settings["max_queue_delay_us"] == {"value": 1000, "from": "config.yaml"}
    assert report.settings["intra_op_spinning"] == {"value": False, "from": "server default"}
    (row,) = report.results
    assert (row.system, row.batch_size, row.provider) == ("onnxruntime", 8, "CPUExecutionProvider")
    markdown = out.with_suffix(".md").read_text()
    assert "max batch size 8 (option)" in markdown
    assert "intra-op spinning off (server default)" in markdown


def _hinted_command(output: str) -> list[str]:
    """The `edgetier ...` command a message suggests, as CLI arguments."""
    match = re.search(r"`edgetier ([^`]+)`", output.replace("\n", " "))
    assert match, output
    return shlex.split(match.group(1))


def test_bench_model_on_fp16_file_hints_the_precisions_option(
    tiny_model: Path, tmp_path: Path
) -> None:
    from edgetier.runtime import convert_fp16

    folder = _repo_with_own_config(tiny_model, tmp_path / "repo")
    version = convert_fp16(folder).version
    fp16_file = folder / str(version) / "model.onnx"
    quiet = ["--count", "5", "--warmup-s", "0", "--no-progress", "--no-energy", "--no-plots"]
    result = runner.invoke(app, ["bench", "model", str(fp16_file), *quiet])
    assert result.exit_code == 2
    assert "the model is fp16 and cpu cannot run it as fp32" in result.output
    assert "convert" not in result.output
    hinted = _hinted_command(result.output)
    assert hinted == ["bench", "model", str(fp16_file), "--precisions", "fp16"]
    out = tmp_path / "fp16"
    again = runner.invoke(app, [*hinted, *quiet, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert {r.precision for r in BenchReport.read(out.with_suffix(".json")).results} == {"fp16"}


def test_bench_model_fp16_of_an_fp32_file_hints_convert(tiny_model: Path, tmp_path: Path) -> None:
    folder = _repo_with_own_config(tiny_model, tmp_path / "repo")
    args = ["bench", "model", str(folder / "1" / "model.onnx"), "--precisions", "fp16"]
    args += ["--providers", "cpu", "--count", "5", "--no-progress", "--no-energy"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    hinted = _hinted_command(result.output)
    assert hinted == ["model", "convert", "--fp16", str(folder)]
    made = runner.invoke(app, hinted)
    assert made.exit_code == 0, made.output
    assert (folder / "2" / "model.onnx").is_file()


def test_int8_hint_names_real_quantize_options() -> None:
    from edgetier.bench._engine_bench import precision_hint

    hint = precision_hint(Path("/data/x.onnx"), "fp32", "int8")
    command = _hinted_command(hint)
    assert command == [
        "model",
        "quantize",
        "--int8",
        "--calibration",
        "CALIBRATION_DIR",
        "MODEL_DIR",
    ]
    assert "MODEL_DIR: a repository model folder with this file as 1/model.onnx" in hint
    help_text = runner.invoke(app, ["model", "quantize", "--help"]).output
    assert all(option in help_text for option in ("--int8", "--calibration"))

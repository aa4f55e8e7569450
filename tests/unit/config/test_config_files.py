"""Every kind of file is read one way: all errors at once, each with the file, the field
path, the value and the limit (edgetier.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgetier.errors import ConfigError
from edgetier.hardware import load_catalog
from edgetier.pipeline import load_pipeline
from edgetier.runtime import load_config_file


def _lines(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [line.strip() for line in str(exc.value).splitlines()]


def test_model_config_reports_every_error(tmp_path: Path) -> None:
    path = tmp_path / "m" / "config.yaml"
    path.parent.mkdir()
    path.write_text(
        "max_batch_size: -1\n"
        "dynamic_batching: {max_queue_delay_microseconds: -5, max_queue_sizes: 3}\n"
        "instance_group: [{count: 0, kind: KIND_TPU}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    lines = _lines(info)
    assert lines[0] == f"{path}: 5 errors in the model config"
    assert f"{path}: max_batch_size: must be >= 0, got -1" in lines
    assert f"{path}: dynamic_batching.max_queue_delay_microseconds: must be >= 0, got -5" in lines
    assert any(
        line.startswith(f"{path}: dynamic_batching.max_queue_sizes: unknown field; allowed: ")
        for line in lines
    )
    assert f"{path}: instance_group[0].count: must be >= 1, got 0" in lines
    assert any(
        line.startswith(f"{path}: instance_group[0].kind: must be one of ") and "'KIND_TPU'" in line
        for line in lines
    )


def test_pipeline_file_reports_every_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\n"
        "sources: [{id: s, kind: synthetic, count: 0, scene: {width: 10}}]\n"
        "stages: [{id: d, kind: detector, model: m.onnx, confidence: 2}]\n"
        "sinks: [{kind: mqtt, port: 70000}, {kind: kafka}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    lines = _lines(info)
    assert lines[0] == f"{path}: 5 errors in the pipeline file"
    assert f"{path}: sources[0].count: must be >= 1, got 0" in lines
    assert f"{path}: sources[0].scene.width: must be >= 160, got 10" in lines
    assert f"{path}: stages[0].confidence: must be <= 1.0, got 2" in lines
    assert f"{path}: sinks[0].port: must be <= 65535, got 70000" in lines
    assert any(line.startswith(f"{path}: sinks[1]: kind 'kafka' is not one of") for line in lines)


def test_catalog_reports_every_error(tmp_path: Path) -> None:
    packaged = Path(load_catalog.__code__.co_filename).with_name("catalog.yaml")
    data = yaml.safe_load(packaged.read_text())
    data["devices"][0]["tdp_w"] = "hot"
    data["devices"][1]["tier"] = "orbit"
    data["devices"][2]["cpu"] = {"cores": 0}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    lines = _lines(info)
    assert lines[0].startswith(f"{path}: ") and lines[0].endswith(" errors in the hardware catalog")
    assert f"{path}: devices[0].tdp_w: must be a number, got 'hot'" in lines
    assert any(
        line.startswith(f"{path}: devices[1].tier: must be one of ") and "'orbit'" in line
        for line in lines
    )
    assert f"{path}: devices[2].cpu.cores: must be >= 1, got 0" in lines
    assert f"{path}: devices[2].cpu.reference: required field is missing" in lines


def test_serve_options_report_every_error_with_where_each_came_from(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgetier.cli._app import app

    options = tmp_path / "serve.yaml"
    options.write_text(
        f"model_repository: {tmp_path}\n"
        "http_port: 70000\n"
        "http_body_timeout_s: -1\n"
        "grpc_max_connectionz: 5\n"
    )
    result = CliRunner().invoke(
        app, ["serve", "--config", str(options), "--model-control-mode", "sometimes"]
    )
    assert result.exit_code == 2
    lines = [line.strip() for line in result.output.splitlines()]
    assert lines[0] == f"error: {options}: 4 errors in the serve options"
    assert f"{options}: http_port: must be <= 65535, got 70000" in lines
    assert f"{options}: http_body_timeout_s: must be > 0.0, got -1" in lines
    assert any(
        line.startswith(f"{options}: grpc_max_connectionz: unknown field; allowed: ")
        for line in lines
    )
    assert any(
        line.startswith("command line: --model-control-mode: must be one of ")
        and "got 'sometimes'" in line
        for line in lines
    )


def test_serve_option_defaults_are_the_settings_defaults() -> None:
    """The CLI shows defaults in --help; they must be what ServerSettings applies."""
    import inspect

    from edgetier.cli._serve import serve
    from edgetier.server import ServerSettings

    fields = ServerSettings.model_fields
    checked = 0
    for name, parameter in inspect.signature(serve).parameters.items():
        default = getattr(parameter.default, "default", None)
        field = {"load_model": "load_models"}.get(name, name)
        if field in fields and field != "model_repository":
            expected = fields[field].get_default(call_default_factory=True)
            assert default == expected, name
            checked += 1
    assert checked >= 20

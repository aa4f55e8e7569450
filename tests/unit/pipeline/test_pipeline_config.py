"""The pipeline file schema: errors name the file, the field path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetier.cli._app import app
from edgetier.errors import ConfigError
from edgetier.pipeline import graph_dot, graph_text, load_pipeline, parse_pipeline

BASE = {"name": "p", "sources": [{"id": "cam", "kind": "synthetic"}]}


def _error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_pipeline(data, source="x.yaml")
    return str(info.value)


def test_unknown_field_lists_the_allowed_ones() -> None:
    msg = _error({**BASE, "sources": [{"id": "cam", "kind": "synthetic", "fps_capp": 5}]})
    assert "x.yaml: sources[0].fps_capp: unknown field; allowed:" in msg
    assert "fps_cap" in msg.split("allowed:")[1]


def test_nested_unknown_field() -> None:
    src = {"id": "c", "kind": "rtsp", "url": "rtsp://h/s", "reconnect": {"max_backoff": 3}}
    msg = _error({**BASE, "sources": [src]})
    assert "sources[0].reconnect.max_backoff" in msg
    assert "max_backoff_s" in msg


def test_unknown_kind_names_the_allowed_kinds() -> None:
    msg = _error({**BASE, "sinks": [{"kind": "kafka"}]})
    assert "sinks[0]" in msg and "'mqtt'" in msg and "'opcua'" in msg


def test_limits_name_field_and_value() -> None:
    msg = _error({**BASE, "sinks": [{"kind": "mqtt", "port": 70000}]})
    assert "sinks[0].port" in msg and "65535" in msg and "70000" in msg


def test_missing_field() -> None:
    assert "sources[0].path: required field is missing" in _error(
        {**BASE, "sources": [{"id": "a", "kind": "file"}]}
    )


def test_references_between_stages() -> None:
    msg = _error({**BASE, "stages": [{"id": "t", "kind": "tracker"}]})
    assert "stages[0]: stage 't' (tracker) needs a detector stage before it" in msg
    line = {"id": "l", "start": [0, 0], "end": [1, 1]}
    det = {"id": "d", "kind": "detector", "model": "m.onnx"}
    msg = _error({**BASE, "stages": [det, {"id": "a", "kind": "analytics", "lines": [line]}]})
    assert "stages[1]: stage 'a' (analytics) needs a tracker stage before it" in msg


def test_duplicate_ids() -> None:
    src = {"id": "cam", "kind": "synthetic"}
    assert "sources[1].id: 'cam' is used twice" in _error({**BASE, "sources": [src, src]})


def test_backpressure_defaults_follow_the_source_kind() -> None:
    cfg = parse_pipeline(
        {
            "name": "p",
            "sources": [
                {"id": "f", "kind": "file", "path": "a.mp4"},
                {"id": "r", "kind": "rtsp", "url": "rtsp://h/s"},
                {"id": "s", "kind": "synthetic", "realtime": True},
                {"id": "w", "kind": "rtsp", "url": "rtsp://h/s", "backpressure": "wait"},
            ],
        }
    )
    assert [s.policy() for s in cfg.sources] == ["wait", "drop_oldest", "drop_oldest", "wait"]


def test_load_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: p\nsources: [{id: a, kind: synthetic, count: 0}]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: sources\[0\].count"):
        load_pipeline(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML: .* at line 2"):
        load_pipeline(broken)


def test_graph_text_and_dot() -> None:
    cfg = parse_pipeline(
        {
            "name": "g",
            "sources": [{"id": "cam", "kind": "synthetic", "count": 3}],
            "stages": [
                {"id": "det", "kind": "detector", "model": "package://detector"},
                {"id": "trk", "kind": "tracker"},
            ],
            "sinks": [{"kind": "jsonl", "path": "e.jsonl"}],
        }
    )
    text = graph_text(cfg)
    assert (
        text.index("cam [synthetic: 3 stream(s)")
        < text.index("det [detector")
        < text.index("jsonl")
    )
    dot = graph_dot(cfg)
    assert '"src:cam" -> "stage:det"' in dot and '"stage:det" -> "stage:trk"' in dot
    assert '"stage:trk" -> "sink:jsonl"' in dot


def test_cli_validate_and_graph(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: p\nsources: [{id: a, kind: synthetic, count: 2}]\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["pipeline", "validate", str(good)])
    assert ok.exit_code == 0 and "2 stream(s)" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: p\nsources: [{id: a, kind: synthetic, colour: 1}]\n")
    res = runner.invoke(app, ["pipeline", "validate", str(bad)])
    assert res.exit_code == 2
    dot = runner.invoke(app, ["pipeline", "graph", str(good), "--format", "dot"])
    assert dot.exit_code == 0 and dot.output.startswith('digraph "p"')


def test_validate_and_run_fail_on_a_missing_input_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: p\nsources: [{id: cam, kind: file, path: nowhere.mp4}]\n")
    runner = CliRunner()
    checked = runner.invoke(app, ["pipeline", "validate", str(missing)])
    assert checked.exit_code == 2
    assert f"sources[0].path: {tmp_path / 'nowhere.mp4'} does not exist" in checked.output
    ran = runner.invoke(app, ["pipeline", "run", str(missing)])
    assert ran.exit_code == 2
    assert "does not exist" in ran.output


def test_run_exits_1_when_a_stream_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    config = tmp_path / "p.yaml"
    config.write_text("name: p\nsources: [{id: cam, kind: file, path: broken.mp4}]\n")
    ran = CliRunner().invoke(app, ["pipeline", "run", str(config)])
    assert ran.exit_code == 1
    assert "stream cam failed" in ran.output

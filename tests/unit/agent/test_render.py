"""The files the agent writes: a model's config.yaml and a node's pipeline file, placed so
that several agents on one host never share a path or a port."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgetier.agent._render import model_config_text, model_filename, render_pipeline
from edgetier.errors import ConfigError
from edgetier.pipeline import parse_pipeline

PIPELINE = {
    "name": "traffic",
    "sources": [
        {"id": "road", "kind": "synthetic", "count": 2},
        {"id": "gate", "kind": "images", "path": "frames"},
    ],
    "stages": [{"id": "detect", "kind": "detector", "model": "package://detector"}],
    "sinks": [
        {"kind": "jsonl", "path": "var/events.jsonl"},
        {"kind": "jsonl", "id": "abs", "path": "/var/log/events.jsonl"},
        {"kind": "mqtt", "outbox": "/tmp/shared-outbox.sqlite"},
        {"kind": "prometheus", "port": 9108},
        {"kind": "opcua", "endpoint": "opc.tcp://0.0.0.0:4840/edgetier/"},
        {"kind": "video", "path": "../up/{stream}.mp4"},
    ],
}


def test_a_pipeline_is_placed_under_the_store_with_its_streams_and_ports(tmp_path: Path) -> None:
    workdir = tmp_path / "pipelines" / "traffic"
    data, endpoints = render_pipeline(
        PIPELINE,
        node="edge-1",
        streams=5,
        workdir=workdir,
        ports=[9010, 9011, 9012],
        models={"detector": tmp_path / "models" / "detector" / "2" / "model.onnx"},
    )
    assert data["node"] == "edge-1"
    assert data["sources"][0]["count"] == 5 and "count" not in data["sources"][1]
    sinks = data["sinks"]
    assert sinks[0]["path"] == str(workdir / "var" / "events.jsonl")
    assert sinks[1]["path"] == str(workdir / "out" / "events.jsonl")
    assert sinks[2]["outbox"] == str(workdir / "state" / "shared-outbox.sqlite")
    assert sinks[3]["port"] == 9010
    assert sinks[4]["endpoint"] == "opc.tcp://0.0.0.0:9011/edgetier/"
    assert sinks[5]["path"] == str(workdir / "out" / "{stream}.mp4")
    assert endpoints == {"prometheus-3": "127.0.0.1:9010", "opcua-4": "0.0.0.0:9011"}
    assert data["stages"][0]["model"] == str(tmp_path / "models" / "detector" / "2" / "model.onnx")
    assert PIPELINE["sources"][0]["count"] == 2  # the assignment itself is left alone
    parse_pipeline(data)  # still a valid pipeline file


def test_streams_are_spread_over_synthetic_sources_and_zero_leaves_them() -> None:
    two = {
        "name": "p",
        "sources": [
            {"id": "a", "kind": "synthetic", "count": 9},
            {"id": "b", "kind": "synthetic", "count": 9},
        ],
    }
    data, _ = render_pipeline(two, node="n", streams=3, workdir=Path("/w"), ports=[])
    assert [s["count"] for s in data["sources"]] == [2, 1]
    data, _ = render_pipeline(two, node="n", streams=1, workdir=Path("/w"), ports=[])
    assert [(s["id"], s["count"]) for s in data["sources"]] == [("a", 1)]
    data, _ = render_pipeline(two, node="n", streams=0, workdir=Path("/w"), ports=[])
    assert [s["count"] for s in data["sources"]] == [9, 9]


def test_a_pipeline_with_more_listening_sinks_than_ports_is_refused() -> None:
    many = {"name": "p", "sources": [], "sinks": [{"kind": "prometheus"}] * 3}
    with pytest.raises(ConfigError, match="no port left"):
        render_pipeline(many, node="n", streams=0, workdir=Path("/w"), ports=[1, 2])


def test_model_config_serves_exactly_the_assigned_versions() -> None:
    text = model_config_text("det", {"name": "other", "max_batch_size": 4}, versions=[3, 2, 3])
    data = yaml.safe_load(text)
    assert data == {
        "name": "det",
        "max_batch_size": 4,
        "version_policy": {"specific": {"versions": [2, 3]}},
    }
    assert model_filename("onnxruntime_onnx", {}) == "model.onnx"
    assert model_filename("litert_tflite", {}) == "model.tflite"
    assert model_filename("onnxruntime_onnx", {"default_model_filename": "net.onnx"}) == "net.onnx"

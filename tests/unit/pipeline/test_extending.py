"""The plug-ins of docs/extending.md (examples/extending): a source, a stage and a sink
registered from a user's module, validated and run like the built-in ones."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from edgetier.errors import ConfigError
from edgetier.pipeline import FrameMeta, FramePacket, Pipeline, load_pipeline, parse_pipeline

EXAMPLE = Path(__file__).parents[3] / "examples" / "extending" / "pipeline.yaml"


def test_the_example_pipeline_runs_its_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the CSV path in the file is relative to the working dir
    pipeline = Pipeline.from_file(EXAMPLE, state_dir=tmp_path)
    stats = asyncio.run(pipeline.run())
    assert stats["card"].frames_out == 20 and stats["card"].failed is None
    with (tmp_path / "var/pipelines/roadside/events.csv").open() as file:
        rows = list(csv.DictReader(file))
    kinds = [row["kind"] for row in rows]
    assert kinds.count("detections") == 20 and "source_status" in kinds


def test_plugin_configs_report_errors_like_built_in_ones() -> None:
    load_pipeline(EXAMPLE)  # registers the example's kinds
    with pytest.raises(ConfigError) as info:
        parse_pipeline(
            {
                "name": "p",
                "sources": [{"id": "c", "kind": "test_card", "frames": 0, "colour": 1}],
                "sinks": [{"kind": "csv"}],
            },
            source="p.yaml",
        )
    message = str(info.value)
    assert "p.yaml: sources[0].frames: must be >= 1, got 0" in message
    assert "p.yaml: sources[0].colour: unknown field; allowed: kind, id" in message
    assert "p.yaml: sinks[0].path: required field is missing" in message


def test_a_plugin_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"p.yaml: plugins\[0\]: cannot import 'nowhere_x'"):
        parse_pipeline(
            {"name": "p", "plugins": ["nowhere_x"], "sources": [{"id": "c", "kind": "x"}]},
            source="p.yaml",
            base_dir=tmp_path,
        )


async def test_region_filter_keeps_the_objects_inside() -> None:
    load_pipeline(EXAMPLE)
    from roadside import RegionFilter, RegionFilterConfig  # type: ignore[import-not-found]

    stage = RegionFilter(RegionFilterConfig(kind="region_filter", id="r", region=(0, 0, 50, 50)))
    det = sv.Detections(xyxy=np.array([[10, 10, 20, 20], [60, 60, 80, 80]], np.float32))
    frame = FramePacket(FrameMeta("s", 0, 0.0, 0.0, 100, 100), np.zeros((100, 100, 3), np.uint8))
    frame.detections = det
    out = await stage.process(frame)
    assert out.detections.xyxy.tolist() == [[10, 10, 20, 20]]

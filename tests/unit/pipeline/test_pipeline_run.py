"""Running pipelines in process: stages, cascade batching, user code, failing sources."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from edgetier.pipeline import FrameMeta, FramePacket, Pipeline, parse_pipeline
from edgetier.pipeline._frame import Prepared
from edgetier.pipeline._models import ModelRunner, inspect_model
from edgetier.pipeline._sources import FrameQueue
from edgetier.pipeline._stages import Cascade, Detector

SCENE = {"width": 160, "height": 128, "duration_s": 1.0, "fps": 10, "vehicles": 3}


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_cascade_batches_crops_across_streams(model_dir: Path) -> None:
    cfg = parse_pipeline(
        {
            "name": "c",
            "sources": [{"id": "s", "kind": "synthetic"}],
            "stages": [
                {"id": "d", "kind": "detector", "model": "det.onnx"},
                {
                    "id": "colour",
                    "kind": "cascade",
                    "model": "cls.onnx",
                    "on_classes": ["vehicle"],
                    "field": "colour",
                    "max_queue_delay_us": 500_000,
                    "max_batch_size": 16,
                },
            ],
        }
    )
    stage_cfg = cfg.stages[1]
    runner = ModelRunner("colour", inspect_model(model_dir / "cls.onnx"), stage_cfg)
    cascade = Cascade(stage_cfg, runner)
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = (255, 0, 0)

    def frame(stream: str, boxes: list[list[float]], names: list[str]) -> FramePacket:
        det = sv.Detections(
            xyxy=np.array(boxes, np.float32),
            confidence=np.ones(len(boxes)),
            class_id=np.zeros(len(boxes), int),
            data={"class_name": np.array(names)},
        )
        return FramePacket(FrameMeta(stream, 0, 0.0, 0.0, 100, 100), image, det)

    a = frame("cam-0", [[0, 0, 40, 40], [60, 60, 90, 90]], ["vehicle", "vehicle"])
    b = frame(
        "cam-1",
        [[5, 5, 45, 45], [0, 0, 2, 2], [50, 0, 99, 40]],
        ["vehicle", "vehicle", "pedestrian"],
    )
    await runner.start()
    try:
        await asyncio.gather(cascade.process(a), cascade.process(b))
    finally:
        await runner.stop()
    # 2 crops of cam-0 and 1 of cam-1 (a 2-px box is too small, a pedestrian is not asked for)
    assert runner.batcher.stats.batch_histogram == {3: 1}
    assert a.detections.data["colour"][0] == b.detections.data["colour"][0] != ""
    assert a.detections.data["colour"][0] != a.detections.data["colour"][1]  # red vs black
    assert b.detections.data["colour"].tolist()[1:] == ["", ""]
    assert np.isnan(b.detections.data["colour_score"][2])


async def test_full_pipeline_to_jsonl(model_dir: Path, tmp_path: Path) -> None:
    cfg = parse_pipeline(
        {
            "name": "full",
            "node": "n1",
            "sources": [{"id": "cam", "kind": "synthetic", "count": 2, "scene": SCENE}],
            "stages": [
                {"id": "d", "kind": "detector", "model": "det.onnx", "confidence": 0.3},
                {"id": "c", "kind": "cascade", "model": "cls.onnx", "on_classes": ["vehicle"]},
                {"id": "t", "kind": "tracker"},
                {
                    "id": "a",
                    "kind": "analytics",
                    "lines": [{"id": "l", "start": [80, 0], "end": [80, 128]}],
                    "summary_interval_s": 0.3,
                },
            ],
            "sinks": [
                {"kind": "jsonl", "path": str(tmp_path / "out/events.jsonl")},
                {
                    "kind": "jsonl",
                    "id": "dets",
                    "path": str(tmp_path / "out/dets.jsonl"),
                    "kinds": ["detections"],
                },
            ],
        }
    )
    stats = await Pipeline(cfg, base_dir=model_dir, state_dir=tmp_path).run()
    assert {sid: s.frames_out for sid, s in stats.items()} == {"cam-0": 10, "cam-1": 10}
    events = _events(tmp_path / "out/events.jsonl")
    counts = [e for e in events if e["kind"] == "counts"]
    assert {e["stream"] for e in counts} == {"cam-0", "cam-1"}
    assert all(e["node"] == "n1" and e["pipeline"] == "full" for e in events)
    assert len({e["id"] for e in events}) == len(events)
    dets = _events(tmp_path / "out/dets.jsonl")
    assert len(dets) == 20 and all(e["kind"] == "detections" for e in dets)
    objects = [o for e in dets for o in e["data"]["objects"]]
    assert objects and all("class_name" in o and "track_id" in o for o in objects)


USER_CODE = """
import numpy as np

def tag(frame, label="x"):
    frame.meta.labels["tag"] = label
    frame.event("custom", {"label": label, "index": frame.meta.frame_index})

class Keep:
    def __init__(self, max_objects):
        self.max_objects = max_objects
        self.closed = False
    async def process(self, frame):
        return frame.detections[: self.max_objects]
    def close(self):
        with open("closed.txt", "w") as f:
            f.write("yes")
"""


async def test_python_stages(model_dir: Path, tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "user_stages.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = parse_pipeline(
        {
            "name": "py",
            "sources": [{"id": "cam", "kind": "synthetic", "scene": SCENE}],
            "stages": [
                {"id": "d", "kind": "detector", "model": "det.onnx", "confidence": 0.01},
                {
                    "id": "keep",
                    "kind": "python",
                    "target": "user_stages:Keep",
                    "params": {"max_objects": 1},
                },
                {
                    "id": "tag",
                    "kind": "python",
                    "target": "user_stages:tag",
                    "params": {"label": "hi"},
                },
            ],
            "sinks": [
                {"kind": "jsonl", "path": str(tmp_path / "e.jsonl")},
                {
                    "kind": "jsonl",
                    "id": "d",
                    "path": str(tmp_path / "d.jsonl"),
                    "kinds": ["detections"],
                },
            ],
        }
    )
    await Pipeline(cfg, base_dir=model_dir, state_dir=tmp_path).run()
    custom = [e for e in _events(tmp_path / "e.jsonl") if e["kind"] == "custom"]
    assert [e["data"]["index"] for e in custom] == list(range(10))
    assert all(e["data"]["label"] == "hi" for e in custom)
    assert all(len(e["data"]["objects"]) <= 1 for e in _events(tmp_path / "d.jsonl"))
    assert (tmp_path / "closed.txt").read_text() == "yes"


async def test_failing_sources_do_not_stop_the_others(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 200)
    cfg = parse_pipeline(
        {
            "name": "mixed",
            "sources": [
                {"id": "good", "kind": "synthetic", "scene": SCENE},
                {"id": "corrupt", "kind": "file", "path": "corrupt.mp4"},
                {
                    "id": "dead",
                    "kind": "rtsp",
                    "url": f"rtsp://127.0.0.1:{_closed_port()}/none",
                    "open_timeout_s": 2,
                    "reconnect": {"initial_backoff_s": 0.05, "max_attempts": 2},
                },
            ],
            "stages": [{"id": "d", "kind": "detector", "model": "det.onnx"}],
            "sinks": [{"kind": "jsonl", "path": str(tmp_path / "e.jsonl")}],
        }
    )
    stats = await Pipeline(cfg, base_dir=model_dir, state_dir=tmp_path).run(duration_s=60)
    assert stats["good"].frames_out == 10
    assert stats["corrupt"].frames_out == 0 and "corrupt.mp4" in (stats["corrupt"].last_error or "")
    errors = [e for e in _events(tmp_path / "e.jsonl") if e["kind"] == "source_error"]
    by_stream = {e["stream"]: e["data"]["error"] for e in errors if e["data"].get("final")}
    assert "file source 'corrupt'" in by_stream["corrupt"]
    assert "rtsp source 'dead'" in by_stream["dead"] and "gave up after 2" in by_stream["dead"]


def _closed_port() -> int:
    from edgetier.testing import free_port

    return free_port()  # nothing listens there once the probe socket is closed


async def test_detector_prepared_in_a_reader_thread_matches_the_loop(model_dir: Path) -> None:
    cfg = parse_pipeline(
        {
            "name": "p",
            "sources": [{"id": "s", "kind": "synthetic"}],
            "stages": [{"id": "d", "kind": "detector", "model": "det.onnx", "confidence": 0.0}],
        }
    )
    runner = ModelRunner("d", inspect_model(model_dir / "det.onnx"), cfg.stages[0])
    detector = Detector(cfg.stages[0], runner)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (90, 120, 3), np.uint8) for _ in range(3)]

    def packet(i: int) -> FramePacket:
        return FramePacket(FrameMeta("s", i, 0.0, 0.0, 120, 90), images[i])

    ahead = [packet(i) for i in range(3)]
    threads = [threading.Thread(target=detector.prepare, args=(f,)) for f in ahead]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("d" in f.prepared for f in ahead)
    await runner.start()
    try:
        done_ahead = await asyncio.gather(*(detector.process(f) for f in ahead))
        done_here = [await detector.process(packet(i)) for i in range(3)]
    finally:
        await runner.stop()
    for a, b in zip(done_ahead, done_here, strict=True):
        assert not a.prepared and len(a.detections) == len(b.detections) > 0
        np.testing.assert_allclose(a.detections.xyxy, b.detections.xyxy)


async def test_a_dropped_frame_gives_its_prepared_buffer_back() -> None:
    released: list[int] = []
    queue = FrameQueue(1, "drop_oldest", asyncio.get_running_loop())
    stop = threading.Event()
    for i in range(3):
        frame = FramePacket(FrameMeta("s", i, 0.0, 0.0, 1, 1), np.zeros((1, 1, 3), np.uint8))
        frame.prepared["d"] = Prepared(None, None, lambda i=i: released.append(i))
        queue.put(frame, stop)
    assert released == [0, 1] and queue.dropped == 2
    last = await queue.get()
    assert last is not None and list(last.prepared) == ["d"]


async def test_sinks_get_every_kind_and_boxes_stay_inside_the_frame(
    model_dir: Path, tmp_path: Path
) -> None:
    """A jsonl sink with no `kinds` receives the per-frame detections too, and every box
    it is given (detector and tracker) lies inside the frame."""
    cfg = parse_pipeline(
        {
            "name": "defaults",
            "sources": [{"id": "cam", "kind": "synthetic", "scene": SCENE}],
            "stages": [
                {"id": "d", "kind": "detector", "model": "det.onnx", "confidence": 0.05},
                {"id": "t", "kind": "tracker", "track_activation_threshold": 0.05},
            ],
            "sinks": [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}],
        }
    )
    await Pipeline(cfg, base_dir=model_dir, state_dir=tmp_path).run()
    events = _events(tmp_path / "events.jsonl")
    kinds = {e["kind"] for e in events}
    assert {"detections", "source_status"} <= kinds
    boxes = [o["box"] for e in events if e["kind"] == "detections" for o in e["data"]["objects"]]
    assert boxes, "the random detector found nothing to check"
    w, h = SCENE["width"], SCENE["height"]
    assert all(0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h for x1, y1, x2, y2 in boxes)


def test_clip_boxes_clips_in_place() -> None:
    from edgetier.pipeline import clip_boxes

    boxes = np.array([[-4.2, 10.0, 50.0, 480.9], [5.0, -1.0, 700.0, 20.0]], np.float32)
    clip_boxes(boxes, 640, 480)
    assert boxes.tolist() == [[0.0, 10.0, 50.0, 480.0], [5.0, 0.0, 640.0, 20.0]]

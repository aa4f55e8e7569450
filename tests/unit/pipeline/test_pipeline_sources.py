"""Sources: file, image folder, synthetic, reconnect with back-off, back-pressure."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgetier.errors import SourceError
from edgetier.pipeline import parse_pipeline
from edgetier.pipeline._decode import RawFrame, choose_decoder
from edgetier.pipeline._sources import FrameQueue, LiveFpsCap, build_streams
from edgetier.synthetic import SceneConfig, SyntheticScene, write_video


def _streams(src: dict[str, Any], base: Path, **kw: Any) -> list[Any]:
    cfg = parse_pipeline({"name": "t", "sources": [src]})
    return build_streams(cfg.sources[0], base_dir=base, **kw)


def _collect(stream: Any, limit: int = 1000) -> tuple[list[RawFrame], list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    frames = []
    stop = threading.Event()
    for frame in stream.frames(stop, lambda sid, kind, data: events.append((kind, data))):
        frames.append(frame)
        if len(frames) >= limit:
            stop.set()
    return frames, events


def test_file_source_decodes_every_frame(tmp_path: Path) -> None:
    scene = SyntheticScene(SceneConfig(width=160, height=128, duration_s=1, fps=10))
    path = write_video(scene, tmp_path / "clip.mp4")
    (stream,) = _streams({"id": "f", "kind": "file", "path": path.name}, tmp_path)
    frames, _ = _collect(stream)
    assert len(frames) == len(scene)
    assert frames[0].image.shape == (128, 160, 3) and frames[0].image.dtype == np.uint8
    assert frames[-1].media_ts_s > frames[0].media_ts_s


def test_corrupt_file_fails_with_the_source_named(tmp_path: Path) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 100)
    (stream,) = _streams({"id": "broken", "kind": "file", "path": "bad.mp4"}, tmp_path)
    with pytest.raises(SourceError, match=r"file source 'broken' \(.*bad.mp4\)"):
        _collect(stream)


def test_image_folder_in_name_order_skipping_unreadable(tmp_path: Path) -> None:
    for i, value in enumerate((10, 20, 30)):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((8, 12, 3), value, np.uint8))
    (tmp_path / "img1b.png").write_bytes(b"garbage")
    src = {"id": "imgs", "kind": "images", "path": ".", "pattern": "*.png", "fps": 5}
    (stream,) = _streams(src, tmp_path)
    frames, _ = _collect(stream)
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 30]
    assert [f.media_ts_s for f in frames] == [0.0, 0.2, 0.4]


def test_synthetic_source_gives_count_streams_with_their_own_seed(tmp_path: Path) -> None:
    scene = {"width": 160, "height": 128, "duration_s": 0.5, "fps": 10}
    streams = _streams({"id": "cam", "kind": "synthetic", "count": 2, "scene": scene}, tmp_path)
    assert [s.stream_id for s in streams] == ["cam-0", "cam-1"]
    a, _ = _collect(streams[0])
    b, _ = _collect(streams[1])
    assert len(a) == len(b) == 5
    assert not np.array_equal(a[0].image, b[0].image)


def test_lost_stream_reconnects_with_backoff(tmp_path: Path) -> None:
    attempts = {"n": 0}

    def opener() -> Iterator[RawFrame]:
        attempts["n"] += 1
        n = attempts["n"]
        if n == 2:
            raise ConnectionRefusedError("connection refused")
        for i in range(3):
            yield RawFrame(np.full((4, 4, 3), n, np.uint8), float(i))
        if n == 1:
            raise ConnectionResetError("peer reset")

    src = {
        "id": "cam",
        "kind": "rtsp",
        "url": "rtsp://127.0.0.1/x",
        "reconnect": {"initial_backoff_s": 0.01, "max_backoff_s": 0.02},
    }
    (stream,) = _streams(src, tmp_path, openers={"cam": opener})
    frames, events = _collect(stream, limit=6)
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 1, 1, 3, 3, 3]
    kinds = [k for k, _ in events]
    assert kinds == ["source_error", "source_error", "source_status"]
    assert "peer reset" in events[0][1]["error"] and "rtsp source 'cam'" in events[0][1]["error"]
    assert events[0][1]["retry_in_s"] == 0.01 and events[1][1]["retry_in_s"] == 0.02
    assert events[2][1]["status"] == "reconnected"


def test_dead_url_gives_up_after_max_attempts(tmp_path: Path) -> None:
    def opener() -> Iterator[RawFrame]:
        raise OSError("Connection refused")
        yield  # pragma: no cover

    src = {
        "id": "dead",
        "kind": "http",
        "url": "http://127.0.0.1:9/x",
        "reconnect": {"initial_backoff_s": 0.01, "max_attempts": 3},
    }
    (stream,) = _streams(src, tmp_path, openers={"dead": opener})
    with pytest.raises(SourceError, match="gave up after 3 attempts"):
        _collect(stream)


async def test_frame_queue_policies() -> None:
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    live = FrameQueue(2, "drop_oldest", loop)
    for i in range(5):
        assert live.put(i, stop)
    live.close()
    assert [await live.get(), await live.get(), await live.get()] == [3, 4, None]
    assert live.dropped == 3
    files = FrameQueue(1, "wait", loop)
    assert files.put("a", stop)
    stop.set()
    assert files.put("b", stop) is False  # a full queue waits until stopped
    assert files.dropped == 0 and await files.get() == "a"


def test_decoder_choice_and_fallback() -> None:
    nv = choose_decoder("h264", "auto", available={"h264", "h264_cuvid"}, gpu=True, jetson=False)
    assert (nv.kind, nv.codec) == ("nvdec", "h264_cuvid")
    sw = choose_decoder("h264", "auto", available={"h264", "h264_cuvid"}, gpu=False, jetson=False)
    assert sw.kind == "software" and "no NVIDIA GPU" in sw.reason
    assert (
        "no hevc_cuvid"
        in choose_decoder("hevc", "nvdec", available={"hevc"}, gpu=True, jetson=False).reason
    )
    js = choose_decoder("h264", "auto", available=set(), gpu=False, jetson=True)
    assert (js.kind, js.codec) == ("jetson", "nvv4l2decoder")
    assert choose_decoder("h264", "software", gpu=True, jetson=True).kind == "software"
    here = choose_decoder("h264")  # this machine: whatever it has, it says why
    assert here.kind != "software" or here.reason


def test_live_fps_cap_keeps_a_jittery_camera_at_its_rate_and_caps_faster_ones() -> None:
    rng = np.random.default_rng(1)

    def admitted(camera_fps: float, cap_fps: float, seconds: float = 20.0) -> int:
        cap = LiveFpsCap(cap_fps)
        times = np.arange(0, seconds, 1 / camera_fps)
        times += rng.uniform(0, 0.006, times.size)  # late by up to 6 ms, frame by frame
        return sum(cap.admit(float(t)) for t in times)

    frames_15 = 20 * 15
    assert admitted(15, 15) == frames_15  # no frame lost to jitter
    assert abs(admitted(30, 15) - frames_15) <= 2  # every second frame
    assert admitted(20, 15) <= frames_15 + 1  # never above the cap
    assert admitted(20, 15) >= 0.9 * frames_15

"""Decoder choice by codec, container and what actually opens; software fallback with a log line.

GStreamer is faked by executables on PATH (``gst-launch-1.0`` writes RGBA frames to stdout as
``fdsink fd=1`` does, or fails like a pipeline without nvv4l2decoder; ``gst-inspect-1.0`` and
``nvpmodel`` make the host look like a Jetson), so the real subprocess path runs. PyAV is
either the real one on real clips or a fake module whose cuvid decoder fails to open or fails
on its first packet, as FFmpeg does without libnvcuvid.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import types
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest

from edgetier.pipeline import _decode
from edgetier.pipeline._decode import (
    choose_decoder,
    jetson_gstreamer_available,
    nvdec_unavailable,
    pyav_frames,
)

W, H, N = 64, 48, 6

FAKE_GST_LAUNCH = """#!{python}
import json, os, re, sys
with open(os.environ["FAKE_GST_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_GST_MODE") == "fail":
    sys.stderr.write('WARNING: erroneous pipeline: no element "nvv4l2decoder"\\n')
    sys.exit(1)
caps = next(a for a in sys.argv if a.startswith("video/x-raw"))
w = int(re.search(r"width=(\\d+)", caps)[1]); h = int(re.search(r"height=(\\d+)", caps)[1])
for i in range({frames}):
    sys.stdout.buffer.write(bytes([10 * i, 1, 2, 255]) * (w * h))
"""


def _tool(bin_dir: Path, name: str, text: str) -> None:
    path = bin_dir / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def jetson_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Fake JetPack tools on PATH; returns the file where gst-launch-1.0 logs its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "gst-launch-1.0", FAKE_GST_LAUNCH.format(python=sys.executable, frames=N))
    _tool(bin_dir, "gst-inspect-1.0", '#!/bin/sh\n[ "$1" = nvv4l2decoder ]\n')
    _tool(bin_dir, "nvpmodel", "#!/bin/sh\necho 0\n")
    log = tmp_path / "gst.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GST_LOG", str(log))
    monkeypatch.setattr(_decode, "nvdec_unavailable", lambda: "no NVIDIA GPU")
    jetson_gstreamer_available.cache_clear()
    yield log
    jetson_gstreamer_available.cache_clear()


def _clip(path: Path, codec: str) -> Path:
    """N frames of WxH video in the container the suffix names, encoded with ``codec``."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if codec == "libx265":
            stream.options = {"x265-params": "log-level=none"}
        for i in range(N):
            image = np.full((H, W, 3), 20 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _argv(log: Path) -> list[str]:
    lines = log.read_text().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("name", "codec", "demux", "parse"),
    [
        ("cam.mkv", "libx265", "matroskademux", "h265parse"),
        ("cam.ts", "libx264", "tsdemux", "h264parse"),
        ("cam.mp4", "libx265", "qtdemux", "h265parse"),
    ],
)
def test_jetson_decodes_each_container_and_codec_through_its_own_elements(
    tmp_path: Path, jetson_tools: Path, name: str, codec: str, demux: str, parse: str
) -> None:
    path = _clip(tmp_path / name, codec)
    frames = list(pyav_frames(str(path), label="cam"))
    argv = _argv(jetson_tools)
    assert argv[argv.index("filesrc") + 1] == f"location={path}"
    assert [demux, parse, "nvv4l2decoder"] == [
        a for a in argv if a in (demux, parse, "nvv4l2decoder")
    ]
    assert "qtdemux" not in argv or demux == "qtdemux"
    assert len(frames) == N and frames[0].image.shape == (H, W, 3)
    assert frames[2].image[0, 0].tolist() == [20, 1, 2]  # RGBA from the pipe, alpha dropped
    assert frames[3].media_ts_s == pytest.approx(0.3)


def test_jetson_without_opencv_gstreamer_is_still_a_jetson(
    jetson_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # opencv-python-headless from PyPI (the video extra) is built without GStreamer
    cv2 = types.ModuleType("cv2")
    cv2.getBuildInformation = lambda: "  Video I/O:\n    GStreamer:                   NO\n"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    assert jetson_gstreamer_available() is True


def test_a_jetson_pipeline_that_fails_falls_back_to_software_with_a_log_line(
    tmp_path: Path, jetson_tools: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("FAKE_GST_MODE", "fail")
    path = _clip(tmp_path / "cam.mkv", "libx265")
    with caplog.at_level(logging.INFO, logger="edgetier.pipeline"):
        frames = list(pyav_frames(str(path), label="cam"))
    assert len(frames) == N  # decoded in software from the start of the file
    assert int(frames[1].image.mean()) == pytest.approx(20, abs=3)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("stream cam: nvv4l2decoder did not open (gst-launch-1.0 exited 1")
    assert 'no element "nvv4l2decoder"' in warning and warning.endswith("decoding hevc in software")


def test_rtsp_and_v4l2_sources_get_their_own_gstreamer_source() -> None:
    rtsp = _decode._gstreamer_argv("rtsp://cam/1", "hevc", "rtsp", 1920, 1080)
    assert rtsp[2:8] == [
        "rtspsrc",
        "location=rtsp://cam/1",
        "latency=100",
        "!",
        "rtph265depay",
        "!",
    ]
    v4l2 = _decode._gstreamer_argv("/dev/video0", "h264", "video4linux2,v4l2", 1280, 720)
    assert v4l2[2:7] == ["v4l2src", "device=/dev/video0", "!", "video/x-h264", "!"]
    assert "video/x-raw,format=RGBA,width=1280,height=720" in v4l2
    spaced = _decode._gstreamer_argv("/data/my clips/a.mp4", "h264", "mov,mp4,m4a", 64, 48)
    assert "location=/data/my clips/a.mp4" in spaced  # one argument: gst-launch escapes it


def test_choice_follows_the_codec_and_the_container() -> None:
    def choose(codec: str, container: str | None) -> Any:
        return choose_decoder(
            codec, "auto", available=set(), gpu=False, jetson=True, container=container
        )

    assert choose("hevc", "matroska,webm").kind == "jetson"
    assert choose("h264", "rtsp").kind == "jetson"
    mjpeg = choose("mjpeg", "video4linux2,v4l2")  # a USB camera's MJPEG or raw frames
    assert mjpeg.kind == "software" and "not mjpeg" in mjpeg.reason
    avi = choose("h264", "avi")
    assert (
        avi.kind == "software" and "no GStreamer demuxer mapped for container 'avi'" in avi.reason
    )


def test_nvdec_is_not_chosen_where_libnvcuvid_does_not_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_library(name: str) -> Any:
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(_decode, "nvidia_gpu_present", lambda: True)  # NVML counts a GPU
    monkeypatch.setattr(_decode.ctypes, "CDLL", no_library)
    nvdec_unavailable.cache_clear()
    try:
        choice = choose_decoder("h264", "auto", available={"h264", "h264_cuvid"}, jetson=False)
    finally:
        nvdec_unavailable.cache_clear()
    assert choice.kind == "software"
    assert (
        "libnvcuvid.so.1 does not load" in choice.reason
        and "'video' driver capability" in choice.reason
    )


# -- NVDEC that does not open, with a fake PyAV ------------------------------------------------


class FakeFFmpegError(Exception):
    pass


class FakeAv(types.ModuleType):
    """PyAV's surface used by the decoder, over an h264 stream of N frames; the cuvid
    context fails at ``open`` ("open") or on its first packet ("decode"), as FFmpeg does
    without libnvcuvid or on a GPU whose NVDEC lacks the profile."""

    def __init__(self, cuvid_fails_at: str) -> None:
        super().__init__("av")
        self.fails_at = cuvid_fails_at
        self.opened = 0
        self.codecs_available = {"h264", "h264_cuvid"}
        self.error = SimpleNamespace(FFmpegError=FakeFFmpegError, InvalidDataError=FakeFFmpegError)
        self.CodecContext = SimpleNamespace(create=self._create)

    def _create(self, name: str, mode: str) -> Any:
        assert (name, mode) == ("h264_cuvid", "r")
        fails_at = self.fails_at

        def fail(*_: Any) -> Any:
            raise FakeFFmpegError(
                f"[Errno 1] Operation not permitted: 'avcodec_open2(\"{name}\", {{}})'"
            )

        return SimpleNamespace(
            extradata=None,
            open=fail if fails_at == "open" else lambda: None,
            decode=fail if fails_at == "decode" else lambda packet: [],
        )

    def open(self, target: str, **kwargs: Any) -> Any:
        self.opened += 1

        def decode(packet: Any) -> list[Any]:
            if packet is None:
                return []
            image = np.full((H, W, 3), packet, np.uint8)
            return [SimpleNamespace(time=packet / 10, to_ndarray=lambda format: image)]

        ctx = SimpleNamespace(name="h264", width=W, height=H, extradata=b"\x01\x64", decode=decode)
        stream = SimpleNamespace(codec_context=ctx, average_rate=10, thread_type=None)
        return SimpleNamespace(
            format=SimpleNamespace(name="mov,mp4,m4a,3gp,3g2,mj2"),
            streams=SimpleNamespace(video=[stream]),
            demux=lambda s: iter([*range(N), None]),
            close=lambda: None,
        )


@pytest.mark.parametrize("fails_at", ["open", "decode"])
def test_nvdec_that_does_not_open_falls_back_to_software_with_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: Any, fails_at: str
) -> None:
    fake = FakeAv(fails_at)
    monkeypatch.setitem(sys.modules, "av", fake)
    monkeypatch.setattr(_decode, "ffmpeg_decoders", lambda: frozenset(fake.codecs_available))
    monkeypatch.setattr(_decode, "nvdec_unavailable", lambda: None)
    monkeypatch.setattr(_decode, "jetson_gstreamer_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="edgetier.pipeline"):
        frames = list(pyav_frames("cam.mp4", label="cam", preference="nvdec"))
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(N))  # every frame, in order
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "stream cam: decoder h264_cuvid (NVDEC)"
    assert messages[1].startswith("stream cam: h264_cuvid did not open (")
    assert messages[1].endswith("decoding h264 in software")
    assert fake.opened == 2  # reopened: software decodes from the first packet


def test_nvdec_listed_by_this_ffmpeg_falls_back_for_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """This machine's PyAV lists h264_cuvid; without the driver it cannot open."""
    if "h264_cuvid" not in av.codecs_available:
        pytest.skip("this FFmpeg has no h264_cuvid")
    if _decode.nvidia_gpu_present():
        pytest.skip("an NVIDIA GPU is present: NVDEC may open here")
    path = _clip(tmp_path / "cam.mp4", "libx264")
    monkeypatch.setattr(_decode, "nvdec_unavailable", lambda: None)  # as if not checked
    monkeypatch.setattr(_decode, "jetson_gstreamer_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="edgetier.pipeline"):
        frames = list(pyav_frames(str(path), label="cam"))
    assert len(frames) == N
    assert any("h264_cuvid did not open" in r.getMessage() for r in caplog.records)

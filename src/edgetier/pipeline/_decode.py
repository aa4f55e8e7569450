"""Choosing and running a video decoder: NVDEC (FFmpeg cuvid), Jetson (GStreamer), software.

`choose_decoder` decides from what this machine has; the source logs the choice and the
reason, e.g. ``stream cam1: decoder h264_cuvid (NVDEC)`` or ``decoder h264 (software: no
NVIDIA GPU)``.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

log = logging.getLogger("edgetier.pipeline")

DecoderPreference = Literal["auto", "software", "nvdec", "jetson"]
_CUVID = {
    "h264": "h264_cuvid",
    "hevc": "hevc_cuvid",
    "av1": "av1_cuvid",
    "vp9": "vp9_cuvid",
    "mpeg4": "mpeg4_cuvid",
    "mjpeg": "mjpeg_cuvid",
}


@dataclass(frozen=True, slots=True)
class DecoderChoice:
    kind: Literal["nvdec", "jetson", "software"]
    codec: str  # FFmpeg decoder name, or the GStreamer element
    reason: str

    def describe(self) -> str:
        label = {"nvdec": "NVDEC", "jetson": "Jetson NVDEC via GStreamer", "software": "software"}
        return f"{self.codec} ({label[self.kind]}{': ' + self.reason if self.reason else ''})"


@functools.cache
def nvidia_gpu_present() -> bool:
    """True when NVML sees at least one NVIDIA GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount()) > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


@functools.cache
def ffmpeg_decoders() -> frozenset[str]:
    import av

    return frozenset(av.codecs_available)


@functools.cache
def jetson_gstreamer_available() -> bool:
    """nvv4l2decoder present and OpenCV built with GStreamer (a Jetson with JetPack)."""
    if not os.path.exists("/etc/nv_tegra_release") and not shutil.which("nvpmodel"):
        return False
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None:
        return False
    found = subprocess.run([inspect, "nvv4l2decoder"], capture_output=True, timeout=10)
    if found.returncode != 0:
        return False
    import cv2

    return "GStreamer:                   YES" in cv2.getBuildInformation()


def choose_decoder(
    codec: str,
    preference: DecoderPreference = "auto",
    *,
    available: Iterable[str] | None = None,
    gpu: bool | None = None,
    jetson: bool | None = None,
) -> DecoderChoice:
    """Pick the decoder for a stream of `codec` (FFmpeg's name: h264, hevc, ...)."""
    decoders = frozenset(available) if available is not None else ffmpeg_decoders()
    has_gpu = nvidia_gpu_present() if gpu is None else gpu
    on_jetson = jetson_gstreamer_available() if jetson is None else jetson
    if preference == "software":
        return DecoderChoice("software", codec, "asked for")
    reasons = []
    if preference in ("auto", "jetson"):
        if on_jetson and codec in ("h264", "hevc"):
            return DecoderChoice("jetson", "nvv4l2decoder", "")
        reasons.append("no Jetson GStreamer nvv4l2decoder")
    if preference in ("auto", "nvdec"):
        cuvid = _CUVID.get(codec)
        if cuvid is None:
            reasons.append(f"no cuvid decoder for {codec}")
        elif cuvid not in decoders:
            reasons.append(f"this FFmpeg has no {cuvid}")
        elif not has_gpu:
            reasons.append("no NVIDIA GPU")
        else:
            return DecoderChoice("nvdec", cuvid, "")
    if preference == "auto":
        reasons = [r for r in reasons if "Jetson" not in r] or reasons
    return DecoderChoice("software", codec, "; ".join(reasons))


@dataclass(slots=True)
class RawFrame:
    image: np.ndarray  # HxWx3 uint8 RGB
    media_ts_s: float


def pyav_frames(
    target: str,
    *,
    label: str,
    preference: DecoderPreference = "auto",
    av_format: str | None = None,
    options: dict[str, str] | None = None,
    timeout_s: float | None = None,
    live: bool = False,
) -> Iterator[RawFrame]:
    """Decode the first video stream of `target` (file, URL or device) to RGB frames."""
    import time

    import av

    if preference == "jetson" or (preference == "auto" and jetson_gstreamer_available()):
        yield from _gstreamer_frames(target, label=label, live=live)
        return
    kwargs: dict[str, Any] = {"options": options or {}}
    if av_format:
        kwargs["format"] = av_format
    if timeout_s is not None:
        kwargs["timeout"] = timeout_s
    container = av.open(target, **kwargs)
    try:
        if not container.streams.video:
            raise av.error.InvalidDataError(0, f"{target}: no video stream")  # type: ignore[no-untyped-call]
        stream = container.streams.video[0]
        choice = choose_decoder(stream.codec_context.name, preference)
        log.info("stream %s: decoder %s", label, choice.describe())
        if choice.kind == "nvdec":
            ctx: Any = av.CodecContext.create(choice.codec, "r")
            if stream.codec_context.extradata:
                ctx.extradata = stream.codec_context.extradata
            decode: Any = ctx.decode
        else:
            stream.thread_type = "AUTO"
            decode = stream.codec_context.decode
        fps = float(stream.average_rate or 25)
        index = 0
        start = time.time()
        for packet in container.demux(stream):
            for frame in decode(packet):
                if live:
                    ts = time.time() - start
                elif frame.time is not None:
                    ts = float(frame.time)
                else:
                    ts = index / fps
                index += 1
                yield RawFrame(frame.to_ndarray(format="rgb24"), ts)
    finally:
        container.close()


def _gstreamer_frames(target: str, *, label: str, live: bool) -> Iterator[RawFrame]:
    """Decode with nvv4l2decoder through OpenCV's GStreamer backend (Jetson)."""
    import time

    import cv2

    if target.startswith(("rtsp://", "rtsps://")):
        src = f"rtspsrc location={target} latency=100 ! rtph264depay ! h264parse"
    else:
        src = f"filesrc location={target} ! qtdemux ! h264parse"
    pipeline = (
        f"{src} ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=false sync=false"
    )
    cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    if not cap.isOpened():
        raise OSError(f"GStreamer could not open {target} with nvv4l2decoder")
    log.info("stream %s: decoder nvv4l2decoder (Jetson NVDEC via GStreamer)", label)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    index, start = 0, time.time()
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            ts = time.time() - start if live else index / fps
            index += 1
            yield RawFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ts)
    finally:
        cap.release()

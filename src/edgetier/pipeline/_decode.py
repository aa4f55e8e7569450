"""Choosing and running a video decoder: NVDEC (FFmpeg cuvid), Jetson (GStreamer), software.

`pyav_frames` opens the source with PyAV, reads the codec and container of its first video
stream, and `choose_decoder` picks the decoder from what this machine has; the source logs
the choice and the reason, e.g. ``stream cam1: decoder hevc_cuvid (NVDEC)`` or ``decoder h264
(software: libnvcuvid.so.1 does not load ...)``. A hardware decoder is tried for real: one
that does not open, or fails before its first frame, falls back to software with a warning
(``stream cam1: nvv4l2decoder did not open (...); decoding hevc in software``).

The Jetson path runs ``gst-launch-1.0`` (JetPack's GStreamer with ``nvv4l2decoder``) as a
child process writing RGBA frames to a pipe, so it needs neither an OpenCV built with
GStreamer (the wheels on PyPI are not) nor PyGObject in the environment.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

__all__ = [
    "DecoderChoice",
    "DecoderPreference",
    "RawFrame",
    "choose_decoder",
    "ffmpeg_decoders",
    "jetson_gstreamer_available",
    "nvdec_unavailable",
    "nvidia_gpu_present",
    "pyav_frames",
]

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
# codec -> (GStreamer parser, RTP depayloader, caps of the compressed stream) for nvv4l2decoder
_JETSON_CODECS = {
    "h264": ("h264parse", "rtph264depay", "video/x-h264"),
    "hevc": ("h265parse", "rtph265depay", "video/x-h265"),
}
# FFmpeg container name (av's format.name lists aliases, comma-separated) -> GStreamer demuxer;
# None: an elementary stream, parsed directly
_DEMUXERS: dict[str, str | None] = {
    "mov": "qtdemux",
    "mp4": "qtdemux",
    "matroska": "matroskademux",
    "webm": "matroskademux",
    "mpegts": "tsdemux",
    "h264": None,
    "hevc": None,
}
_V4L2 = frozenset({"video4linux2", "v4l2"})
_NVCUVID = "libnvcuvid.so.1"


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
def nvdec_unavailable() -> str | None:
    """Why FFmpeg's cuvid decoders cannot run here, or None when they can.

    A GPU that NVML counts is not enough: cuvid needs ``libnvcuvid.so.1`` from the driver,
    which a Jetson does not have (its decoder is nvv4l2decoder) and a container gets only
    with the ``video`` driver capability (``NVIDIA_DRIVER_CAPABILITIES=compute,video,...``).
    """
    if not nvidia_gpu_present():
        return "no NVIDIA GPU"
    try:
        ctypes.CDLL(_NVCUVID)
    except OSError as exc:
        return (
            f"{_NVCUVID} does not load ({exc}): no NVDEC driver library here (a Jetson, or a"
            " container started without the 'video' driver capability)"
        )
    return None


@functools.cache
def ffmpeg_decoders() -> frozenset[str]:
    import av

    return frozenset(av.codecs_available)


@functools.cache
def jetson_gstreamer_available(etc_root: Path = Path("/etc")) -> bool:
    """A Jetson with JetPack's GStreamer: ``nvv4l2decoder`` is registered and
    ``gst-launch-1.0`` is present (OpenCV's build does not matter)."""
    if not (etc_root / "nv_tegra_release").exists() and not shutil.which("nvpmodel"):
        return False
    inspect, launch = shutil.which("gst-inspect-1.0"), shutil.which("gst-launch-1.0")
    if inspect is None or launch is None:
        return False
    try:
        found = subprocess.run([inspect, "nvv4l2decoder"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0


def _container_names(container: str | None) -> set[str]:
    return set(container.split(",")) if container else set()


def _jetson_unsuitable(codec: str, container: str | None) -> str | None:
    """Why nvv4l2decoder through GStreamer cannot take this stream, or None when it can."""
    if codec not in _JETSON_CODECS:
        return f"nvv4l2decoder is used here for {' and '.join(_JETSON_CODECS)}, not {codec}"
    names = _container_names(container)
    if not names or names & (_V4L2 | {"rtsp"}) or names & _DEMUXERS.keys():
        return None
    return f"no GStreamer demuxer mapped for container {container!r}"


def choose_decoder(
    codec: str,
    preference: DecoderPreference = "auto",
    *,
    available: Iterable[str] | None = None,
    gpu: bool | None = None,
    jetson: bool | None = None,
    container: str | None = None,
) -> DecoderChoice:
    """Pick the decoder for a stream of ``codec`` (FFmpeg's name: h264, hevc, ...) in
    ``container`` (FFmpeg's format name: ``mov,mp4,...``, ``matroska,webm``, ``mpegts``,
    ``rtsp``, ``video4linux2,v4l2``; None when unknown).

    ``available`` (FFmpeg's decoders), ``gpu`` (NVDEC usable) and ``jetson`` (JetPack's
    GStreamer decoder present) default to what this machine has.
    """
    if preference == "software":
        return DecoderChoice("software", codec, "asked for")
    reasons = []
    if preference in ("auto", "jetson"):
        on_jetson = jetson_gstreamer_available() if jetson is None else jetson
        why = _jetson_unsuitable(codec, container) if on_jetson else None
        if on_jetson and why is None:
            return DecoderChoice("jetson", "nvv4l2decoder", "")
        reasons.append(why or "no Jetson GStreamer nvv4l2decoder")
    if preference in ("auto", "nvdec"):
        cuvid = _CUVID.get(codec)
        if cuvid is None:
            reasons.append(f"no cuvid decoder for {codec}")
        elif cuvid not in (frozenset(available) if available is not None else ffmpeg_decoders()):
            reasons.append(f"this FFmpeg has no {cuvid}")
        else:
            why = nvdec_unavailable() if gpu is None else (None if gpu else "no NVIDIA GPU")
            if why is None:
                return DecoderChoice("nvdec", cuvid, "")
            reasons.append(why)
    if preference == "auto":
        reasons = [r for r in reasons if "no Jetson" not in r] or reasons
    return DecoderChoice("software", codec, "; ".join(reasons))


@dataclass(slots=True)
class RawFrame:
    image: np.ndarray  # HxWx3 uint8 RGB
    media_ts_s: float


class _HardwareDidNotOpen(Exception):
    """A hardware decoder failed before its first frame: decode in software instead."""


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
    import av

    kwargs: dict[str, Any] = {"options": options or {}}
    if av_format:
        kwargs["format"] = av_format
    if timeout_s is not None:
        kwargs["timeout"] = timeout_s
    container = av.open(target, **kwargs)
    try:
        stream = _video_stream(av, container, target)
        codec = stream.codec_context.name
        choice = choose_decoder(codec, preference, container=container.format.name)
        log.info("stream %s: decoder %s", label, choice.describe())
        if choice.kind == "software":
            yield from _pyav_decode(container, stream, None, live=live)
            return
        try:
            if choice.kind == "jetson":
                ctx = stream.codec_context
                argv = _gstreamer_argv(target, codec, container.format.name, ctx.width, ctx.height)
                fps = float(stream.average_rate or 25)
                container.close()  # GStreamer opens the source itself
                yield from _gstreamer_frames(argv, ctx.width, ctx.height, fps=fps, live=live)
            else:
                yield from _pyav_decode(
                    container, stream, _cuvid_context(av, choice, stream), live=live
                )
            return
        except _HardwareDidNotOpen as exc:
            log.warning(
                "stream %s: %s did not open (%s); decoding %s in software",
                label,
                choice.codec,
                exc,
                codec,
            )
        container.close()
        container = av.open(target, **kwargs)
        yield from _pyav_decode(container, _video_stream(av, container, target), None, live=live)
    finally:
        container.close()


def _video_stream(av: Any, container: Any, target: str) -> Any:
    if not container.streams.video:
        raise av.error.InvalidDataError(0, f"{target}: no video stream")
    return container.streams.video[0]


def _cuvid_context(av: Any, choice: DecoderChoice, stream: Any) -> Any:
    """An opened cuvid decoder context; the driver library loads here, or it fails here."""
    try:
        ctx = av.CodecContext.create(choice.codec, "r")
        if stream.codec_context.extradata:
            ctx.extradata = stream.codec_context.extradata
        ctx.open()
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _HardwareDidNotOpen(exc) from exc
    return ctx


def _pyav_decode(container: Any, stream: Any, hw: Any | None, *, live: bool) -> Iterator[RawFrame]:
    """Demux with PyAV and decode with ``hw`` (an opened cuvid context) or in software."""
    if hw is None:
        stream.thread_type = "AUTO"
        decode = stream.codec_context.decode
    else:
        decode = hw.decode
    fps = float(stream.average_rate or 25)
    index = 0
    start = time.time()
    for packet in container.demux(stream):
        try:
            frames = decode(packet)
        except Exception as exc:
            if hw is None or index:
                raise
            raise _HardwareDidNotOpen(exc) from exc  # nothing yielded yet: start again
        for frame in frames:
            if live:
                ts = time.time() - start
            elif frame.time is not None:
                ts = float(frame.time)
            else:
                ts = index / fps
            index += 1
            yield RawFrame(frame.to_ndarray(format="rgb24"), ts)


def _gstreamer_argv(
    target: str, codec: str, container: str | None, width: int, height: int
) -> list[str]:
    """gst-launch-1.0 arguments decoding ``target`` with nvv4l2decoder into RGBA on stdout.

    The source part follows the container: RTSP (depayloader), V4L2 (the camera's compressed
    caps), a file through its demuxer (qtdemux, matroskademux, tsdemux) or an elementary
    stream. Each argument stays one argument (gst-launch escapes it), so a path with spaces
    is safe. RGBA from nvvidconv has no row padding, unlike RGB.
    """
    parse, depay, caps = _JETSON_CODECS[codec]
    names = _container_names(container)
    if "rtsp" in names or target.startswith(("rtsp://", "rtsps://")):
        source = ["rtspsrc", f"location={target}", "latency=100", "!", depay, "!", parse]
    elif names & _V4L2:
        source = ["v4l2src", f"device={target}", "!", caps, "!", parse]
    else:
        demux = next((_DEMUXERS[n] for n in sorted(names) if n in _DEMUXERS), None)
        source = ["filesrc", f"location={target}", "!", *([demux, "!"] if demux else []), parse]
    launch = shutil.which("gst-launch-1.0") or "gst-launch-1.0"
    return [
        launch,
        "-q",
        *source,
        "!",
        "nvv4l2decoder",
        "!",
        "nvvidconv",
        "!",
        f"video/x-raw,format=RGBA,width={width},height={height}",
        "!",
        "fdsink",
        "fd=1",
        "sync=false",
    ]


def _read_exactly(pipe: IO[bytes], size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = pipe.read(size - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _gstreamer_frames(
    argv: list[str], width: int, height: int, *, fps: float, live: bool
) -> Iterator[RawFrame]:
    """Run the pipeline and yield its RGBA frames as RGB; a pipeline that ends with an error
    before its first frame raises ``_HardwareDidNotOpen``."""
    frame_bytes = width * height * 4
    with tempfile.TemporaryFile() as errors:  # a file, so a chatty stderr cannot block it
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
        except OSError as exc:
            raise _HardwareDidNotOpen(exc) from exc
        assert proc.stdout is not None
        index, start = 0, time.time()
        try:
            while (data := _read_exactly(proc.stdout, frame_bytes)) is not None:
                rgba = np.frombuffer(data, np.uint8).reshape(height, width, 4)
                ts = time.time() - start if live else index / fps
                index += 1
                yield RawFrame(np.ascontiguousarray(rgba[..., :3]), ts)
            if proc.wait(timeout=10) != 0:
                errors.seek(0)
                text = errors.read().decode(errors="replace").strip()[-400:]
                message = f"gst-launch-1.0 exited {proc.returncode}: {text or 'no message'}"
                if index == 0:
                    raise _HardwareDidNotOpen(message)
                raise OSError(f"{message} (after {index} frames)")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.stdout.close()

"""The video sink: annotated frames per stream, to a file or published to an RTSP server.

sinks:
  - {kind: video, path: out/{stream}.mp4}
  - {kind: video, url: rtsp://127.0.0.1:8554/{stream}}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edgetier.pipeline._frame import Event, FramePacket
from edgetier.pipeline.sinks._base import Sink, SinkContext
from edgetier.pipeline.sinks._configs import VideoSink

log = logging.getLogger("edgetier.pipeline")


class Video(Sink):
    """Annotated video per stream (supervision annotators, PyAV encoder), to a file or RTSP.

    Each stream has its own writer thread, so encoding never holds up the event loop. A
    file output waits for its encoder (no frame is lost); an RTSP output is live: when the
    encoder falls behind the oldest queued frame is dropped, and when the server is
    unreachable the writer drops frames and reconnects with back-off. Dropped frames are
    counted per stream; a dead output never stops the pipeline.
    """

    wants_frames = True

    def __init__(self, cfg: VideoSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.cfg: VideoSink = cfg
        self.live = cfg.url is not None
        self.writers: dict[str, _VideoWriter] = {}

    async def start(self) -> None:
        import supervision as sv

        self._boxes = sv.BoxAnnotator(thickness=2)
        self._labels = sv.LabelAnnotator(text_scale=0.4, text_padding=2)

    async def handle(self, events: list[Event]) -> None:
        """Events are not drawn: the frames carry what the video shows."""

    def codec(self) -> str:
        import av

        if self.cfg.codec != "auto":
            return self.cfg.codec
        return "libx264" if "libx264" in av.codecs_available else "mpeg4"

    def target(self, sid: str) -> str:
        template = self.cfg.url if self.cfg.url is not None else self.cfg.path
        assert template is not None  # the config holds exactly one of them
        return template.replace("{stream}", sid)

    @property
    def dropped(self) -> int:
        """Frames of every stream that never reached the output."""
        return sum(w.dropped for w in self.writers.values())

    def annotate(self, frame: FramePacket) -> np.ndarray:
        det = frame.detections
        image = frame.image.copy()
        if len(det):
            labels = []
            for i in range(len(det)):
                parts = [str(det.data["class_name"][i])] if "class_name" in det.data else []
                if det.tracker_id is not None:
                    parts.append(f"#{det.tracker_id[i]}")
                for key, values in det.data.items():
                    column = np.asarray(values)
                    if key != "class_name" and column.dtype.kind in "UO" and column[i]:
                        parts.append(str(values[i]))
                labels.append(" ".join(parts))
            image = self._boxes.annotate(image, det)
            image = self._labels.annotate(image, det, labels=labels)
        return image

    async def frame(self, frame: FramePacket) -> None:
        sid = frame.meta.stream_id
        writer = self.writers.get(sid)
        if writer is None:
            writer = self.writers[sid] = _VideoWriter(self, sid)
        if self.live:
            writer.offer(frame)
        else:
            await writer.put(frame)

    async def stop(self) -> None:
        for sid, writer in self.writers.items():
            await asyncio.to_thread(writer.finish, 10.0)
            log.info(
                "video %s: stream %s: %d frames written to %s, %d dropped",
                self.name,
                sid,
                writer.written,
                self.target(sid),
                writer.dropped,
            )


class _VideoWriter:
    """One stream's annotate -> encode -> mux loop on its own thread."""

    def __init__(self, sink: Video, stream_id: str) -> None:
        self.sink = sink
        self.cfg = sink.cfg
        self.stream_id = stream_id
        self.target = sink.target(stream_id)
        self.written = 0
        self._dropped_queue = 0  # counted by the event loop (live: queue full)
        self._dropped_output = 0  # counted by the thread (output down or failed)
        self._queue: queue.Queue[FramePacket | None] = queue.Queue(self.cfg.queue_size)
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None  # (width, height) of the output
        self._failures = 0
        self._backoff_s = self.cfg.reconnect.initial_backoff_s
        self._retry_at_s = 0.0
        self._gave_up = False
        self._last_pts = -1
        self._t0_s = 0.0
        self._rate: Fraction | None = None if self.cfg.fps is None else _rate_of(self.cfg.fps)
        self._first: FramePacket | None = None  # held until the second gives the rate
        self._origin_s: float | None = None  # media time of the first frame written
        self._thread = threading.Thread(
            target=self._run, name=f"video-{sink.name}-{stream_id}", daemon=True
        )
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self._dropped_queue + self._dropped_output

    def offer(self, frame: FramePacket) -> None:
        """Live output: never waits; a full queue loses its oldest frame."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
                self._dropped_queue += 1
            self._queue.put_nowait(frame)  # the loop is the only producer: there is room

    async def put(self, frame: FramePacket) -> None:
        """File output: waits for room, off the event loop."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            await asyncio.to_thread(self._queue.put, frame)

    def finish(self, timeout_s: float) -> None:
        """Write what is queued (files) or drop it (live), flush the encoder, close."""
        if self.sink.live:
            while True:
                try:
                    if self._queue.get_nowait() is not None:
                        self._dropped_queue += 1
                except queue.Empty:
                    break
        self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error(
                "video %s: the writer of stream %s did not finish within %.0f s",
                self.sink.name,
                self.stream_id,
                timeout_s,
            )

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                break
            self._write(frame)
        if self._first is not None:  # a one-frame stream: no second frame gives the rate
            self._rate = DEFAULT_RATE
            self._write_one(self._first)
        if self._container is not None:
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            except Exception as exc:
                log.warning("video %s: flushing %s failed: %s", self.sink.name, self.target, exc)
            self._close()

    def _open(self, width: int, height: int) -> None:
        import av

        codec = self.sink.codec()
        if self.sink.live:
            container = av.open(
                self.target,
                mode="w",
                format="rtsp",
                options={"rtsp_transport": self.cfg.rtsp_transport},
                timeout=self.cfg.open_timeout_s,
            )
        else:
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            container = av.open(str(path), mode="w")
        try:
            assert self._rate is not None
            stream: Any = container.add_stream(codec, rate=self._rate)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            if self.sink.live:
                # a reader that joins mid-stream waits at most a second for a key frame
                stream.codec_context.gop_size = max(1, round(self._rate))
                if codec == "libx264":
                    stream.options = {"tune": "zerolatency", "preset": "veryfast"}
                container.start_encoding()  # connects: ANNOUNCE, SETUP, RECORD
        except BaseException:
            with contextlib.suppress(Exception):
                container.close()
            raise
        self._container, self._stream = container, stream
        self._last_pts, self._t0_s = -1, time.monotonic()
        log.info(
            "video %s: stream %s -> %s (%s)",
            self.sink.name,
            self.stream_id,
            self.target,
            stream.codec_context.name,
        )

    def _pts(self, frame: FramePacket) -> int:
        """Live: the wall clock, so that a reader plays at capture pace. Files: the frame's
        own media time, so the video lasts as long as its source whatever was skipped."""
        assert self._rate is not None
        if self.sink.live:
            pts = round((time.monotonic() - self._t0_s) * self._rate)
        else:
            if self._origin_s is None:
                self._origin_s = frame.meta.media_ts_s
            pts = round((frame.meta.media_ts_s - self._origin_s) * self._rate)
        self._last_pts = max(pts, self._last_pts + 1)
        return self._last_pts

    def _write(self, frame: FramePacket) -> None:
        """Write a frame. While the rate is unknown (the config gives none), the first
        frame waits for the second, whose media time tells the source's frame rate."""
        if self._rate is not None:
            self._write_one(frame)
        elif self._first is None:
            self._first = frame
        else:
            first, self._first = self._first, None
            step_s = frame.meta.media_ts_s - first.meta.media_ts_s
            self._rate = _rate_of(1.0 / step_s) if step_s > 0 else DEFAULT_RATE
            log.info(
                "video %s: stream %s at the source's rate, %.3g fps",
                self.sink.name,
                self.stream_id,
                float(self._rate),
            )
            self._write_one(first)
            self._write_one(frame)

    def _write_one(self, frame: FramePacket) -> None:
        import av

        if self._gave_up or (self._container is None and time.monotonic() < self._retry_at_s):
            self._dropped_output += 1
            return
        try:
            if self._container is None:
                if self._size is None:
                    h, w = frame.image.shape[:2]
                    self._size = (max(2, w - w % 2), max(2, h - h % 2))
                self._open(*self._size)
                if self._failures:
                    log.warning(
                        "video %s: %s is back after %d failed attempt(s)",
                        self.sink.name,
                        self.target,
                        self._failures,
                    )
                    self._failures, self._backoff_s = 0, self.cfg.reconnect.initial_backoff_s
            image = self.sink.annotate(frame)
            w, h = self._size or (0, 0)
            if image.shape[:2] != (h, w):
                import cv2

                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            video_frame.pts = self._pts(frame)
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
            self.written += 1
        except Exception as exc:
            self._dropped_output += 1
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self._close()
        self._failures += 1
        reason = f"{type(exc).__name__}: {exc}"
        name, target = self.sink.name, self.target
        retry = self.cfg.reconnect
        if not self.sink.live or (retry.max_attempts and self._failures >= retry.max_attempts):
            self._gave_up = True
            log.error(
                "video %s: %s failed (%s); gave up after %d attempt(s), the frames of "
                "stream %s are dropped from now on",
                name,
                target,
                reason,
                self._failures,
                self.stream_id,
            )
            return
        level = logging.ERROR if self._failures == 1 else logging.WARNING
        log.log(
            level,
            "video %s: RTSP output %s unavailable (%s); retry %d in %.1f s, frames are "
            "dropped meanwhile (%d so far)",
            name,
            target,
            reason,
            self._failures,
            self._backoff_s,
            self.dropped,
        )
        self._retry_at_s = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * retry.factor, retry.max_backoff_s)

    def _close(self) -> None:
        container, self._container, self._stream = self._container, None, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()


DEFAULT_RATE = Fraction(25)
"""Frame rate of a video whose source gives none (a single frame)."""


def _rate_of(fps: float) -> Fraction:
    """A frame rate as the encoder wants it: 29.97 -> 30000/1001, 10.0 -> 10."""
    return Fraction(fps).limit_denominator(1001)

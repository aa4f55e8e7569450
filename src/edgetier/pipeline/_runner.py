"""Running a pipeline: reader threads -> stages (through shared batchers) -> sinks.

Per stream, up to `max_in_flight` frames run the stages that keep no per-stream state
(detector, classifier, cascade) at once, so the batchers see frames of every stream and
several frames of each; from the first stage that keeps state (tracker, analytics, user
code by default) frames run one at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgetier.pipeline._config import (
    AnalyticsStage,
    ModelStageConfig,
    PipelineConfig,
    load_pipeline,
    user_modules_from,
)
from edgetier.pipeline._decode import RawFrame
from edgetier.pipeline._frame import Event, FrameMeta, FramePacket
from edgetier.pipeline._models import ModelRunner, inspect_model, resolve_model_path
from edgetier.pipeline._sources import FrameQueue, Opener, Stream, StreamReader, build_streams
from edgetier.pipeline._stages import Stage, _object, build_stage
from edgetier.pipeline.sinks import Sink, SinkContext, build_sink

log = logging.getLogger("edgetier.pipeline")


@dataclass
class StreamStats:
    """Live figures of one stream."""

    stream_id: str
    frames_in: int = 0  # read from the source
    frames_out: int = 0  # delivered to the sinks
    dropped: int = 0  # lost to back-pressure (live sources)
    skipped: int = 0  # above the fps cap (live sources)
    errors: int = 0
    fps: float = 0.0
    last_error: str | None = None
    failed: str | None = None  # why the stream ended early (its source gave up)
    done: bool = False
    first_out_s: float | None = None  # time.monotonic() of the first and last delivery
    last_out_s: float | None = None
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def latency_ms(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        return float(np.percentile(np.fromiter(self.latencies_s, float), q) * 1000)


class Pipeline:
    """A pipeline built from its config; `await run()` runs it until the end or a stop."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        base_dir: str | Path = ".",
        state_dir: str | Path | None = None,
        openers: dict[str, Opener] | None = None,
    ) -> None:
        self.config = config
        self.base_dir = Path(base_dir)
        self.node = config.node_name()
        self.state_dir = Path(state_dir) if state_dir else Path("var/pipelines") / config.name
        self.streams: list[Stream] = []
        for src in config.sources:
            self.streams.extend(build_streams(src, base_dir=self.base_dir, openers=openers))
        self.stats = {s.stream_id: StreamStats(s.stream_id) for s in self.streams}
        self.runners: dict[str, ModelRunner] = {}
        self.stages: list[Stage] = []
        self.sinks: list[Sink] = []
        self._stop = asyncio.Event()
        self._thread_stop = threading.Event()
        self._background: set[asyncio.Task[Any]] = set()
        # per-frame `detections` events, where a stage finds objects and a sink takes them
        self._want_detections = any(type(s).produces_detections for s in config.stages) and any(
            s.kinds is None or "detections" in s.kinds for s in config.sinks
        )

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Pipeline:
        path = Path(path)
        return cls(load_pipeline(path), base_dir=path.parent, **kwargs)

    def stop(self) -> None:
        """Ask a running pipeline to stop (safe from signal handlers on the loop)."""
        self._stop.set()

    # -- building -------------------------------------------------------------------

    async def _build(self) -> None:
        for cfg in self.config.stages:
            if isinstance(cfg, ModelStageConfig):
                path = resolve_model_path(cfg.model, base_dir=self.base_dir)
                info = inspect_model(path)
                runner = await asyncio.to_thread(ModelRunner, cfg.id, info, cfg)
                self.runners[cfg.id] = runner
        with user_modules_from(self.base_dir):  # a python stage's module may sit beside the file
            self.stages = [build_stage(cfg, self.runners) for cfg in self.config.stages]
        analytics = [s for s in self.config.stages if isinstance(s, AnalyticsStage)]
        ctx = SinkContext(
            node=self.node,
            pipeline=self.config.name,
            stream_ids=[s.stream_id for s in self.streams],
            state_dir=self.state_dir,
            base_dir=self.base_dir,
            lines=[line.id for a in analytics for line in a.lines],
            zones=[zone.id for a in analytics for zone in a.zones],
            stats=lambda: self.stats,
        )
        self.sinks = [build_sink(cfg, ctx) for cfg in self.config.sinks]

    # -- running --------------------------------------------------------------------

    async def run(
        self,
        *,
        duration_s: float | None = None,
        max_frames: int | None = None,
        progress: Callable[[dict[str, StreamStats]], None] | None = None,
        progress_interval_s: float = 1.0,
    ) -> dict[str, StreamStats]:
        """Run until every source ends, `duration_s` passes or `stop()` is called.

        `max_frames` stops each stream after that many frames.
        """
        loop = asyncio.get_running_loop()
        await self._build()
        started: list[Any] = []
        # the reader threads letterbox in parallel already; OpenCV's own worker threads
        # on top of them cost CPU time (about 1 ms a 720p frame on 2 cores) and gain none
        cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            parts: list[ModelRunner | Stage | Sink] = [*self.runners.values(), *self.stages]
            parts.extend(self.sinks)
            for part in parts:
                await part.start()
                started.append(part)
            split = next((i for i, s in enumerate(self.stages) if s.ordered), len(self.stages))
            self._unordered, self._ordered = self.stages[:split], self.stages[split:]
            readers, tasks = [], []
            for stream in self.streams:
                queue = FrameQueue(stream.config.queue_size, stream.policy, loop)
                reader = StreamReader(
                    stream,
                    queue,
                    status=self._status_from_thread(loop),
                    stop=self._thread_stop,
                    on_frame=self._packet_maker(stream, max_frames),
                )
                readers.append(reader)
                tasks.append(asyncio.create_task(self._stream_loop(stream, queue, reader)))
            for reader in readers:
                reader.start()
            monitor = asyncio.create_task(self._monitor(readers, progress, progress_interval_s))
            all_done = asyncio.gather(*tasks)
            stop_wait = asyncio.create_task(self._stop.wait())
            waiters: list[asyncio.Future[Any]] = [all_done, stop_wait]
            await asyncio.wait(waiters, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
            self._thread_stop.set()
            for reader in readers:
                reader.queue.close()
            try:
                await asyncio.wait_for(all_done, timeout=30)
            except TimeoutError:
                log.error("streams did not finish within 30 s of the stop; cancelled")
            stop_wait.cancel()
            monitor.cancel()
            for reader in readers:
                await asyncio.to_thread(reader.join, 5.0)
            self._refresh(readers, 0.0)
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
        finally:
            cv2.setNumThreads(cv2_threads)
            self._thread_stop.set()
            for part in reversed(started):
                try:
                    await part.stop()
                except Exception:
                    log.exception("stopping %s failed", type(part).__name__)
        return self.stats

    def _packet_maker(
        self, stream: Stream, max_frames: int | None
    ) -> Callable[[RawFrame, float, int], Any]:
        if max_frames is not None:
            limit = stream.config.max_frames
            stream.config = stream.config.model_copy(
                update={"max_frames": min(limit, max_frames) if limit else max_frames}
            )

        # the leading stages that read only the image prepare their inputs here, in the
        # reader thread: in parallel across streams and off the event loop
        preparers = []
        for stage in self.stages:
            if not stage.prepares:
                break
            preparers.append(stage)

        def make(raw: RawFrame, capture_ts_s: float, index: int) -> FramePacket:
            h, w = raw.image.shape[:2]
            meta = FrameMeta(stream.stream_id, index, capture_ts_s, raw.media_ts_s, w, h)
            frame = FramePacket(meta=meta, image=raw.image)
            for stage in preparers:
                try:
                    stage.prepare(frame)
                except Exception:  # process() prepares again and reports the error
                    break
            return frame

        return make

    def _status_from_thread(
        self, loop: asyncio.AbstractEventLoop
    ) -> Callable[[str, str, dict[str, Any]], None]:
        def status(stream_id: str, kind: str, data: dict[str, Any]) -> None:
            def deliver() -> None:
                st = self.stats[stream_id]
                if kind == "source_error":
                    st.errors += 1
                    st.last_error = str(data.get("error"))
                task = asyncio.create_task(self._dispatch([Event(kind, stream_id, data)]))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

            with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
                loop.call_soon_threadsafe(deliver)

        return status

    async def _unordered_stages(self, frame: FramePacket) -> FramePacket:
        for stage in self._unordered:
            frame = await stage.process(frame)
        return frame

    async def _stream_loop(self, stream: Stream, queue: FrameQueue, reader: StreamReader) -> None:
        st = self.stats[stream.stream_id]
        pending: asyncio.Queue[asyncio.Task[FramePacket] | None] = asyncio.Queue(
            maxsize=self.config.max_in_flight
        )

        async def feed() -> None:
            try:
                while not self._stop.is_set():
                    frame = await queue.get()
                    if frame is None:
                        break
                    await pending.put(asyncio.create_task(self._unordered_stages(frame)))
            finally:
                await pending.put(None)

        feeder = asyncio.create_task(feed())
        while True:
            task = await pending.get()
            if task is None:
                break
            try:
                frame = await task
                for stage in self._ordered:
                    frame = await stage.process(frame)
            except Exception as exc:
                st.errors += 1
                if st.errors <= 5 or st.errors % 100 == 0:
                    log.error("stream %s: a stage failed: %s", stream.stream_id, exc)
                error = {"error": f"{type(exc).__name__}: {exc}"}
                await self._dispatch([Event("stage_error", stream.stream_id, error)])
                continue
            await self._deliver(frame, st)
        await feeder
        st.done = True

    async def _deliver(self, frame: FramePacket, st: StreamStats) -> None:
        st.frames_out += 1
        st.last_out_s = time.monotonic()
        if st.first_out_s is None:
            st.first_out_s = st.last_out_s
        st.latencies_s.append(time.time() - frame.meta.capture_ts_s)
        if self._want_detections:
            det = frame.detections
            frame.event("detections", {"objects": [_object(det, i) for i in range(len(det))]})
        for sink in self.sinks:
            try:
                if frame.events:
                    await sink.handle(frame.events)
                if sink.wants_frames:
                    await sink.frame(frame)
            except Exception:
                log.exception(
                    "sink %s failed on frame %d of %s",
                    sink.name,
                    frame.meta.frame_index,
                    frame.meta.stream_id,
                )

    async def _dispatch(self, events: list[Event]) -> None:
        for sink in self.sinks:
            try:
                await sink.handle(events)
            except Exception:
                log.exception("sink %s failed", sink.name)

    def _refresh(self, readers: list[StreamReader], dt: float) -> None:
        for reader in readers:
            st = self.stats[reader.stream.stream_id]
            st.frames_in = reader.frames_read
            st.dropped = reader.queue.dropped
            st.skipped = reader.skipped
            st.failed = reader.error

    async def _monitor(
        self,
        readers: list[StreamReader],
        progress: Callable[[dict[str, StreamStats]], None] | None,
        interval_s: float,
    ) -> None:
        last = {sid: (time.monotonic(), 0) for sid in self.stats}
        while True:
            await asyncio.sleep(interval_s)
            self._refresh(readers, interval_s)
            now = time.monotonic()
            for sid, st in self.stats.items():
                t0, n0 = last[sid]
                st.fps = (st.frames_out - n0) / max(now - t0, 1e-9)
                last[sid] = (now, st.frames_out)
            if progress is not None:
                progress(self.stats)

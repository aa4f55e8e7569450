"""Sources: video files, RTSP/HTTP streams, V4L2 cameras, image folders, synthetic scenes.

Each stream is read by its own thread into a small bounded queue with the stream's
back-pressure policy: a live source drops the oldest queued frame (and counts it), a
file waits. Live sources that fail or end reopen with exponential back-off; every
failure becomes a `source_error` event naming the stream, and the other streams go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2

from edgetier.pipeline._config import (
    FileSource,
    ImageFolderSource,
    ReconnectConfig,
    SourceConfig,
    StreamSource,
    SyntheticSource,
    V4L2Source,
)
from edgetier.pipeline._decode import RawFrame, pyav_frames

log = logging.getLogger("edgetier.pipeline")

Opener = Callable[[], Iterator[RawFrame]]
StatusCallback = Callable[[str, str, dict[str, Any]], None]  # (stream, kind, data)


class SourceFailed(Exception):
    """A source gave up (a file that cannot be read, or reconnect attempts exhausted)."""


class Stream:
    """One stream of frames: an opener plus how to reopen it when it is lost."""

    def __init__(
        self,
        stream_id: str,
        config: Any,
        opener: Opener,
        *,
        describe: str,
        reconnect: ReconnectConfig | None = None,
        loop: bool = False,
    ) -> None:
        self.stream_id = stream_id
        self.config = config
        self.opener = opener
        self.describe = describe
        self.reconnect = reconnect
        self.loop = loop
        self.live: bool = bool(config.live)
        self.policy = config.policy()

    def frames(self, stop: threading.Event, status: StatusCallback) -> Iterator[RawFrame]:
        """Frames until the end (files) or until `stop`; reopens live streams with back-off."""
        if self.reconnect is None:
            while not stop.is_set():
                try:
                    yield from self.opener()
                except Exception as exc:
                    raise SourceFailed(f"{self.describe}: {_reason(exc)}") from exc
                if not self.loop:
                    return
            return
        yield from self._reconnecting(stop, status)

    def _reconnecting(self, stop: threading.Event, status: StatusCallback) -> Iterator[RawFrame]:
        cfg = self.reconnect
        assert cfg is not None
        backoff_s = cfg.initial_backoff_s
        failures = 0
        lost = False
        while not stop.is_set():
            got_frame = False
            try:
                for frame in self.opener():
                    if not got_frame:
                        got_frame = True
                        if lost:
                            status(
                                self.stream_id,
                                "source_status",
                                {"status": "reconnected", "after_failures": failures},
                            )
                            log.warning("stream %s: reconnected", self.stream_id)
                        failures, backoff_s, lost = 0, cfg.initial_backoff_s, False
                    yield frame
                    if stop.is_set():
                        return
                reason = "stream ended"
            except Exception as exc:
                reason = _reason(exc)
            if stop.is_set():
                return
            failures += 1
            lost = True
            message = f"{self.describe}: {reason}"
            give_up = cfg.max_attempts > 0 and failures >= cfg.max_attempts
            status(
                self.stream_id,
                "source_error",
                {
                    "error": message,
                    "attempt": failures,
                    "retry_in_s": None if give_up else round(backoff_s, 3),
                },
            )
            if give_up:
                raise SourceFailed(f"{message} (gave up after {failures} attempts)")
            log.warning("stream %s: %s; retrying in %.2f s", self.stream_id, message, backoff_s)
            if stop.wait(backoff_s):
                return
            backoff_s = min(backoff_s * cfg.factor, cfg.max_backoff_s)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def build_streams(
    config: SourceConfig, *, base_dir: Path, openers: dict[str, Opener] | None = None
) -> list[Stream]:
    """The streams of one source entry (a synthetic entry with count N gives N streams).

    `openers` replaces the opener of a stream id (tests use it to fake network streams).
    """
    openers = openers or {}
    if isinstance(config, SyntheticSource):
        ids = (
            [config.id] if config.count == 1 else [f"{config.id}-{i}" for i in range(config.count)]
        )
        return [
            Stream(
                sid,
                config,
                openers.get(sid) or _synthetic_opener(config, i),
                describe=f"synthetic source {sid!r} (seed {config.seed + i})",
            )
            for i, sid in enumerate(ids)
        ]
    opener = openers.get(config.id)
    if isinstance(config, FileSource):
        path = _resolve(config.path, base_dir)
        return [
            Stream(
                config.id,
                config,
                opener
                or (lambda: pyav_frames(str(path), label=config.id, preference=config.decoder)),
                describe=f"file source {config.id!r} ({path})",
                loop=config.loop,
            )
        ]
    if isinstance(config, StreamSource):
        options: dict[str, str] = (
            {"rtsp_transport": config.rtsp_transport} if config.kind == "rtsp" else {}
        )
        return [
            Stream(
                config.id,
                config,
                opener
                or (
                    lambda: pyav_frames(
                        config.url,
                        label=config.id,
                        preference=config.decoder,
                        options=options,
                        timeout_s=config.open_timeout_s,
                        live=True,
                    )
                ),
                describe=f"{config.kind} source {config.id!r} ({config.url})",
                reconnect=config.reconnect,
            )
        ]
    if isinstance(config, V4L2Source):
        v4l2_options: dict[str, str] = {}
        if config.width and config.height:
            v4l2_options["video_size"] = f"{config.width}x{config.height}"
        if config.fps:
            v4l2_options["framerate"] = f"{config.fps:g}"
        return [
            Stream(
                config.id,
                config,
                opener
                or (
                    lambda: pyav_frames(
                        config.device,
                        label=config.id,
                        preference="software",
                        av_format="v4l2",
                        options=v4l2_options,
                        live=True,
                    )
                ),
                describe=f"v4l2 source {config.id!r} ({config.device})",
                reconnect=config.reconnect,
            )
        ]
    if isinstance(config, ImageFolderSource):
        folder = _resolve(config.path, base_dir)
        return [
            Stream(
                config.id,
                config,
                opener
                or (
                    lambda: image_folder_frames(folder, config.pattern, config.fps, label=config.id)
                ),
                describe=f"image folder source {config.id!r} ({folder})",
                loop=config.loop,
            )
        ]
    raise TypeError(f"unknown source config {type(config).__name__}")


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def image_folder_frames(
    folder: Path, pattern: str, fps: float, *, label: str
) -> Iterator[RawFrame]:
    """Images of `folder` matching `pattern`, in name order; unreadable ones are skipped."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(folder.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no file matches {pattern!r} in {folder}")
    log.info("stream %s: %d images, decoder cv2.imread (software)", label, len(files))
    index = 0
    for file in files:
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            log.warning("stream %s: cannot decode %s; skipped", label, file)
            continue
        yield RawFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index / fps)
        index += 1


def _synthetic_opener(config: SyntheticSource, index: int) -> Opener:
    def frames() -> Iterator[RawFrame]:
        from edgetier.pipeline._synthetic import SceneConfig, SyntheticScene

        known = {f.name for f in dataclasses.fields(SceneConfig)}
        unknown = sorted(set(config.scene) - known)
        if unknown:
            raise ValueError(f"scene: unknown field(s) {unknown}; allowed: {sorted(known)}")
        fields = dict(config.scene)
        if "lines" in fields:
            fields["lines"] = tuple(tuple(tuple(p) for p in line) for line in fields["lines"])
        fields["seed"] = int(fields.get("seed", config.seed)) + index
        scene = SyntheticScene(SceneConfig(**fields))
        fps = scene.config.fps
        start = time.monotonic()
        for frame in scene:
            if config.realtime and fps > 0:
                delay = start + frame.timestamp_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield RawFrame(frame.image, float(frame.timestamp_s))

    return frames


class FrameQueue:
    """A bounded queue from a reader thread to the event loop, with a back-pressure policy.

    `drop_oldest`: a full queue loses its oldest frame (counted in `dropped`);
    `wait`: the reader blocks until there is room.
    """

    _END = object()

    def __init__(self, maxsize: int, policy: str, loop: asyncio.AbstractEventLoop) -> None:
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._loop = loop
        self._ready = asyncio.Event()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, item: Any, stop: threading.Event) -> bool:
        """Called by the reader thread; False when `stop` was set while waiting."""
        with self._cond:
            if self.policy == "wait":
                while len(self._items) >= self.maxsize:
                    if stop.is_set():
                        return False
                    self._cond.wait(0.05)
            elif len(self._items) >= self.maxsize:
                lost = self._items.popleft()
                self.dropped += 1
                discard = getattr(lost, "discard", None)
                if discard is not None:  # gives back buffers prepared for the frame
                    discard()
            self._items.append(item)
        self._wake()
        return True

    def close(self) -> None:
        with self._cond:
            self._items.append(self._END)
        self._wake()

    async def get(self) -> Any | None:
        """The next item, or None at the end of the stream."""
        while True:
            self._ready.clear()
            with self._cond:
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify()
                    return None if item is self._END else item
            await self._ready.wait()

    def __len__(self) -> int:
        return len(self._items)


class LiveFpsCap:
    """Admits at most `fps` frames per second of a live source, tolerant of jitter.

    Each admitted frame moves the next due time on by one period from the previous due
    time (not from the frame's arrival), and a frame up to a quarter period early is
    admitted: a 15 FPS camera capped at 15 keeps every frame even when frames arrive a
    little early, a 30 FPS camera keeps every second one, and over any window the rate
    stays at or below the cap.
    """

    def __init__(self, fps: float) -> None:
        self.period_s = 1.0 / fps
        self.tolerance_s = self.period_s / 4
        self._due_s = -float("inf")

    def admit(self, now_s: float) -> bool:
        if now_s < self._due_s - self.tolerance_s:
            return False
        self._due_s = max(self._due_s, now_s - self.tolerance_s) + self.period_s
        return True


class StreamReader:
    """Runs one stream's frames into a FrameQueue on a daemon thread, honouring fps_cap."""

    def __init__(
        self,
        stream: Stream,
        queue: FrameQueue,
        *,
        status: StatusCallback,
        stop: threading.Event,
        on_frame: Callable[[RawFrame, float, int], Any],
    ) -> None:
        self.stream = stream
        self.queue = queue
        self.status = status
        self.stop = stop
        self.on_frame = on_frame  # (frame, capture_ts_s, index) -> queue item
        self.frames_read = 0
        self.skipped = 0
        self.error: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"source-{stream.stream_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _run(self) -> None:
        cfg = self.stream.config
        min_gap_s = 1.0 / cfg.fps_cap if cfg.fps_cap else 0.0
        last_s = -1e18
        cap = LiveFpsCap(cfg.fps_cap) if cfg.fps_cap and self.stream.live else None
        index = 0
        try:
            for raw in self.stream.frames(self.stop, self.status):
                if self.stop.is_set():
                    break
                now = time.monotonic()
                if cap is not None:
                    if not cap.admit(now):
                        self.skipped += 1
                        continue
                elif min_gap_s and now - last_s < min_gap_s:
                    if self.stop.wait(min_gap_s - (now - last_s)):
                        break
                    now = time.monotonic()
                last_s = now
                if self.frames_read == 0:
                    h, w = raw.image.shape[:2]
                    self.status(
                        self.stream.stream_id,
                        "source_status",
                        {"status": "started", "width": w, "height": h},
                    )
                self.frames_read += 1
                item = self.on_frame(raw, time.time(), index)
                index += 1
                if not self.queue.put(item, self.stop):
                    break
                if cfg.max_frames is not None and index >= cfg.max_frames:
                    break
        except SourceFailed as exc:
            self.error = str(exc)
            log.error("stream %s: %s", self.stream.stream_id, exc)
            self.status(self.stream.stream_id, "source_error", {"error": str(exc), "final": True})
        except Exception as exc:  # a bug in a source must not take the pipeline down
            self.error = f"{self.stream.describe}: {_reason(exc)}"
            log.exception("stream %s failed", self.stream.stream_id)
            self.status(self.stream.stream_id, "source_error", {"error": self.error, "final": True})
        finally:
            self.queue.close()

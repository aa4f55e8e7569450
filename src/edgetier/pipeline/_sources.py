"""Sources: video files, RTSP/HTTP streams, V4L2 cameras, image folders, synthetic scenes.

A source is a :class:`Source` subclass registered for a config ``kind``: it names the
streams of its config entry and opens each as an iterator of decoded frames. Each stream
is read by its own thread into a small bounded queue with the stream's back-pressure
policy: a live source drops the oldest queued frame (and counts it), a file waits. Live
sources that fail or end reopen with exponential back-off; every failure becomes a
`source_error` event naming the stream, and the other streams go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2

from edgetier.errors import SourceError
from edgetier.pipeline._config import (
    SOURCES,
    FileSource,
    ImageFolderSource,
    ReconnectConfig,
    SourceConfig,
    StreamSource,
    SyntheticSource,
    V4L2Source,
    resolve_path,
)
from edgetier.pipeline._decode import RawFrame, pyav_frames

log = logging.getLogger("edgetier.pipeline")

Opener = Callable[[], Iterator[RawFrame]]
StatusCallback = Callable[[str, str, dict[str, Any]], None]  # (stream, kind, data)


class Source(ABC):
    """Base of every source: the streams of one config entry and how to open each.

    ``open`` is called on the stream's reader thread and yields decoded RGB frames
    (:class:`RawFrame`: an HxWx3 uint8 image and its media time in seconds); it raises
    when the stream cannot be read. A live source (``cfg.live``) that ends or fails is
    opened again with the back-off of its ``reconnect`` field, when it has one.
    """

    def __init__(self, cfg: SourceConfig, *, base_dir: Path) -> None:
        self.cfg = cfg
        self.base_dir = base_dir

    def stream_ids(self) -> list[str]:
        """The ids of the streams this entry gives (one, unless it makes several)."""
        return [self.cfg.id]

    def describe(self, stream_id: str) -> str:
        """How log lines and events name the stream."""
        return f"{self.cfg.kind} source {stream_id!r}"

    @property
    def reconnect(self) -> ReconnectConfig | None:
        """Back-off between reopenings (live sources); None ends the stream on a failure."""
        value = getattr(self.cfg, "reconnect", None)
        return value if self.cfg.live and isinstance(value, ReconnectConfig) else None

    @property
    def loop(self) -> bool:
        """Start again from the beginning at the end (files and folders with ``loop``)."""
        return bool(getattr(self.cfg, "loop", False))

    @abstractmethod
    def open(self, stream_id: str) -> Iterator[RawFrame]:
        """The frames of one stream, from its beginning (or from now, for a camera)."""


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
                    raise SourceError(f"{self.describe}: {_reason(exc)}") from exc
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
                raise SourceError(f"{message} (gave up after {failures} attempts)")
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
    source = SOURCES.load(config.kind)(config, base_dir=base_dir)
    return [
        Stream(
            sid,
            config,
            openers.get(sid) or functools.partial(source.open, sid),
            describe=source.describe(sid),
            reconnect=source.reconnect,
            loop=source.loop,
        )
        for sid in source.stream_ids()
    ]


class FileFrames(Source):
    """A video file, decoded by PyAV (hardware decoders where the config asks and they work)."""

    cfg: FileSource

    def describe(self, stream_id: str) -> str:
        return f"file source {stream_id!r} ({resolve_path(self.cfg.path, self.base_dir)})"

    def open(self, stream_id: str) -> Iterator[RawFrame]:
        path = resolve_path(self.cfg.path, self.base_dir)
        return pyav_frames(str(path), label=stream_id, preference=self.cfg.decoder)


class StreamFrames(Source):
    """An RTSP or HTTP(S) stream read through FFmpeg."""

    cfg: StreamSource

    def describe(self, stream_id: str) -> str:
        return f"{self.cfg.kind} source {stream_id!r} ({self.cfg.url})"

    def open(self, stream_id: str) -> Iterator[RawFrame]:
        cfg = self.cfg
        options: dict[str, str] = (
            {"rtsp_transport": cfg.rtsp_transport} if cfg.kind == "rtsp" else {}
        )
        return pyav_frames(
            cfg.url,
            label=stream_id,
            preference=cfg.decoder,
            options=options,
            timeout_s=cfg.open_timeout_s,
            live=True,
        )


class V4L2Frames(Source):
    """A Video4Linux2 camera through FFmpeg's v4l2 input."""

    cfg: V4L2Source

    def describe(self, stream_id: str) -> str:
        return f"v4l2 source {stream_id!r} ({self.cfg.device})"

    def open(self, stream_id: str) -> Iterator[RawFrame]:
        cfg = self.cfg
        options: dict[str, str] = {}
        if cfg.width and cfg.height:
            options["video_size"] = f"{cfg.width}x{cfg.height}"
        if cfg.fps:
            options["framerate"] = f"{cfg.fps:g}"
        return pyav_frames(
            cfg.device,
            label=stream_id,
            preference=cfg.decoder,
            av_format="v4l2",
            options=options,
            live=True,
        )


class ImageFolderFrames(Source):
    """The images of a folder, in name order; unreadable ones are skipped."""

    cfg: ImageFolderSource

    def describe(self, stream_id: str) -> str:
        folder = resolve_path(self.cfg.path, self.base_dir)
        return f"image folder source {stream_id!r} ({folder})"

    def open(self, stream_id: str) -> Iterator[RawFrame]:
        cfg = self.cfg
        folder = resolve_path(cfg.path, self.base_dir)
        return image_folder_frames(folder, cfg.pattern, cfg.fps, label=stream_id)


class SyntheticFrames(Source):
    """Synthetic road scenes (:mod:`edgetier.synthetic`); ``count`` streams, one seed each."""

    cfg: SyntheticSource

    def stream_ids(self) -> list[str]:
        cfg = self.cfg
        return [cfg.id] if cfg.count == 1 else [f"{cfg.id}-{i}" for i in range(cfg.count)]

    def describe(self, stream_id: str) -> str:
        return f"synthetic source {stream_id!r} (seed {self._seed(stream_id)})"

    def _seed(self, stream_id: str) -> int:
        index = self.stream_ids().index(stream_id)
        return self.cfg.scene.seed + self.cfg.seed + index

    def open(self, stream_id: str) -> Iterator[RawFrame]:
        from edgetier.synthetic import SyntheticScene

        scene_config = self.cfg.scene.model_copy(update={"seed": self._seed(stream_id)})
        scene = SyntheticScene(scene_config)
        fps = scene_config.fps
        realtime = self.cfg.realtime
        start = time.monotonic()
        for frame in scene:
            if realtime and fps > 0:
                delay = start + frame.timestamp_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield RawFrame(frame.image, float(frame.timestamp_s))


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
        except SourceError as exc:
            self.error = str(exc)
            log.error("stream %s: %s", self.stream.stream_id, exc)
            self.status(self.stream.stream_id, "source_error", {"error": str(exc), "final": True})
        except Exception as exc:  # a bug in a source must not take the pipeline down
            self.error = f"{self.stream.describe}: {_reason(exc)}"
            log.exception("stream %s failed", self.stream.stream_id)
            self.status(self.stream.stream_id, "source_error", {"error": self.error, "final": True})
        finally:
            self.queue.close()

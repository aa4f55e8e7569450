"""The base of every sink and what a sink may know of its pipeline.

A sink gets the events of each frame (:meth:`Sink.handle`) and, when ``wants_frames``,
the frames too (:meth:`Sink.frame`). It receives every kind of event unless its config
lists ``kinds``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgetier.pipeline._config import SinkConfig
    from edgetier.pipeline._frame import Event, FramePacket

__all__ = ["Sink", "SinkContext"]


@dataclass
class SinkContext:
    """What a sink may know of the pipeline it serves."""

    node: str
    pipeline: str
    stream_ids: list[str]
    state_dir: Path
    base_dir: Path
    lines: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)
    stats: Callable[[], dict[str, Any]] = dict  # stream id -> StreamStats


class Sink(ABC):
    """Base of every sink: ``handle`` is the one method a sink must have.

    ``start`` runs once before the first frame and ``stop`` once after the last (flush,
    close, wait for acknowledgements there); a sink that also wants the annotated frames
    sets ``wants_frames = True`` and overrides ``frame``.
    """

    wants_frames = False

    def __init__(self, cfg: SinkConfig, ctx: SinkContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = cfg.id or cfg.kind
        self.kinds = set(cfg.kinds) if cfg.kinds is not None else None

    def accepts(self, event: Event) -> bool:
        """Whether this sink takes ``event`` (its config's ``kinds``; all when not given)."""
        return self.kinds is None or event.kind in self.kinds

    async def start(self) -> None:  # noqa: B027 - an optional hook
        """Called once before the first frame: connect, open files, start servers."""

    @abstractmethod
    async def handle(self, events: list[Event]) -> None:
        """Take the events of one frame (or of a source); filter them with ``accepts``."""

    async def frame(self, frame: FramePacket) -> None:  # noqa: B027 - an optional hook
        """Take one frame after the stages (only when ``wants_frames``)."""

    async def stop(self) -> None:  # noqa: B027 - an optional hook
        """Called once after the last frame: flush and close."""

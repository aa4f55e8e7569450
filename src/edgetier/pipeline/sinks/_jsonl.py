"""The JSONL sink: one JSON event per line, appended to a file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgetier.pipeline._frame import Event
from edgetier.pipeline.sinks._base import Sink, SinkContext
from edgetier.pipeline.sinks._configs import JsonlSink

log = logging.getLogger("edgetier.pipeline")


class Jsonl(Sink):
    """One JSON event per line, appended to a file."""

    def __init__(self, cfg: JsonlSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.path = Path(cfg.path)  # outputs are relative to the working directory
        self._file: Any = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    async def handle(self, events: list[Event]) -> None:
        lines = [
            e.to_json(node=self.ctx.node, pipeline=self.ctx.pipeline) + b"\n"
            for e in events
            if self.accepts(e)
        ]
        if lines:
            self._file.writelines(lines)
            self._file.flush()

    async def stop(self) -> None:
        if self._file is not None:
            self._file.close()

"""The webhook sink: JSON arrays of events POSTed with retries and bounded memory."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import orjson

from edgetier.pipeline._frame import Event
from edgetier.pipeline.sinks._base import Sink, SinkContext
from edgetier.pipeline.sinks._configs import WebhookSink

log = logging.getLogger("edgetier.pipeline")


class Webhook(Sink):
    """POSTs JSON arrays of events; retries with exponential back-off; bounded memory."""

    def __init__(self, cfg: WebhookSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.cfg: WebhookSink = cfg
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.dropped = 0
        self.delivered = 0

    async def start(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(timeout=self.cfg.timeout_s, headers=self.cfg.headers)
        self._task = asyncio.create_task(self._run(), name=f"webhook-{self.name}")

    async def handle(self, events: list[Event]) -> None:
        for e in events:
            if self.accepts(e):
                if len(self._pending) >= self.cfg.max_pending:
                    self._pending.popleft()
                    self.dropped += 1
                self._pending.append(e.to_dict(node=self.ctx.node, pipeline=self.ctx.pipeline))
        if self._pending:
            self._wake.set()

    async def _run(self) -> None:
        while not (self._closing and not self._pending):
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), 100))]
            if not await self._post(batch):
                self.dropped += len(batch)

    async def _post(self, batch: list[dict[str, Any]]) -> bool:
        import httpx

        backoff = self.cfg.initial_backoff_s
        body = orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY)
        for attempt in range(1, self.cfg.max_attempts + 1):
            try:
                r = await self._client.post(
                    self.cfg.url, content=body, headers={"content-type": "application/json"}
                )
                if r.status_code < 300:
                    self.delivered += len(batch)
                    return True
                retry = r.status_code >= 500 or r.status_code == 429
                reason = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                retry, reason = True, f"{type(exc).__name__}: {exc}"
            if not retry or attempt == self.cfg.max_attempts:
                log.error(
                    "webhook %s: %d events dropped after %d attempts (%s)",
                    self.name,
                    len(batch),
                    attempt,
                    reason,
                )
                return False
            log.warning("webhook %s: %s; retry %d in %.1f s", self.name, reason, attempt, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.cfg.max_backoff_s)
        return False

    async def stop(self) -> None:
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._task, self.cfg.timeout_s * 2)
        except TimeoutError:
            self._task.cancel()
        await self._client.aclose()

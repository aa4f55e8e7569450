"""HTTP connections that always end: uvicorn's httptools protocol with the limits it lacks.

uvicorn closes a keep-alive connection that stays idle after a response, but a client
that connects and sends nothing, or half a request line, or headers without end, holds
its connection (and a file descriptor) for ever. This protocol adds:

- a header timeout: a request's line and headers must arrive within
  ``header_timeout_s`` of the connection opening or of the request's first byte
  (408 with the JSON error body, then close);
- a header size cap (431, then close), since the parser keeps headers in memory;
- a cap on open connections: one over ``max_connections`` is answered at once with a
  503 and ``Retry-After`` and closed, so the process never runs out of descriptors;
- connections that cannot hang on a client that stops reading: a response that waits
  ``send_timeout_s`` for the client to make room is dropped (the connection aborted),
  and so is a closing or idle connection whose last bytes never leave.

The body timeout is the application's (it reads the body): see ``HttpApp``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The limits every HTTP connection of one listener lives under."""

    header_timeout_s: float
    send_timeout_s: float
    keepalive_timeout_s: float
    max_header_bytes: int
    max_connections: int


_LINGER_S = 2.0
"""How long a refused connection's further data is read and dropped before it closes."""


def protocol_class(limits: HttpLimits) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class for a listener with these limits."""
    return type("EdgeTierHttpProtocol", (_LimitedProtocol,), {"limits": limits})


def error_response(status: int, message: str, *, retry_after_s: float | None = None) -> bytes:
    """A whole HTTP/1.1 response with the JSON error body, closing the connection."""
    body = orjson.dumps({"error": message})
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
    ]
    if retry_after_s is not None:
        head.append(b"retry-after: %d\r\n" % max(1, math.ceil(retry_after_s)))
    return b"".join([*head, b"\r\n", body])


class _LimitedProtocol(HttpToolsProtocol):
    """One HTTP connection; see the module docstring for what it adds to uvicorn's."""

    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        self._message_seq = 0
        self._header_bytes = 0
        self._discarding = False

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.limits.max_connections
        if len(self.connections) > limit:
            self._refuse(
                503,
                f"the server has {limit} HTTP connections open, its limit "
                f"(--http-max-connections); retry later or use another node",
                retry_after_s=1.0,
                linger=False,  # its descriptor is what the cap protects: free it at once
            )
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        for timer in (self._abort_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._abort_timer = self._send_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The client is not reading fast enough: it has ``send_timeout_s`` to catch up."""
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(
                self.limits.send_timeout_s, self.transport.abort
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def data_received(self, data: bytes) -> None:
        if self._discarding:  # refused: what the client still sends is read and dropped
            return
        waiting, seq = self._awaiting_headers, self._message_seq
        super().data_received(data)
        if waiting and self._awaiting_headers and seq == self._message_seq:
            # a whole chunk of one request's line and headers, still unfinished
            self._header_bytes += len(data)
            limit = self.limits.max_header_bytes
            if self._header_bytes > limit and not self.transport.is_closing():
                self._refuse(
                    431,
                    f"request line and headers exceed {limit} bytes (--http-max-header-bytes)",
                )

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, f"invalid HTTP request: {msg}")

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._message_seq += 1
        self._header_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            self._abort_later()

    # -- timers ----------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._on_header_timeout
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is being written: no room for a 408
            self._abort_later()
            return
        self._refuse(
            408,
            f"request line and headers did not arrive within {self.limits.header_timeout_s:g} s "
            f"(--http-header-timeout-s)",
        )

    def timeout_keep_alive_handler(self) -> None:
        """Idle past the keep-alive timeout: close, or abort if the last answer never left."""
        self.timeout_keep_alive_task = None
        if self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def _abort_later(self) -> None:
        """A closing connection flushes its last response; abort it if that never ends."""
        if self._abort_timer is None:
            self._abort_timer = self.loop.call_later(
                self.limits.keepalive_timeout_s, self.transport.abort
            )

    def _refuse(
        self,
        status: int,
        message: str,
        *,
        retry_after_s: float | None = None,
        linger: bool = True,
    ) -> None:
        """Answer and close. With ``linger``, a client still sending meanwhile must not get
        a reset before it reads the answer, so its data is read and dropped a moment
        before closing."""
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        transport = self.transport
        transport.write(error_response(status, message, retry_after_s=retry_after_s))
        if not linger or not transport.can_write_eof():
            transport.close()
            self._abort_later()
            return
        transport.write_eof()
        self._discarding = True
        if self.flow is not None:
            self.flow.resume_reading()
        linger_s = min(_LINGER_S, self.limits.header_timeout_s)
        self._abort_timer = self.loop.call_later(linger_s, transport.abort)

"""KServe v2 over HTTP/REST: a raw ASGI app (no framework in the hot path).

Routes follow Triton's HTTP API (one table, ``_ROUTES``): health, server and model
metadata, config, infer (JSON and binary tensor data), statistics, the model repository
extension and the system shared-memory extension. Errors are ``{"error": "..."}`` with the
status the exception maps to; a request body over the limit is refused with 413 before it
is read, a body that stops arriving for ``body_timeout_s`` gets a 408, and once the server
drains every request but the health checks gets a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from edgetier.errors import (
    EdgeTierError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ShutdownError,
    UnsupportedError,
)
from edgetier.server import _errors
from edgetier.server._backend import Backend
from edgetier.server._core import int_param, run
from edgetier.server._http_codec import decode_request, encode_response, loads, parse_header_length

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[..., Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_OCTET = (b"content-type", b"application/octet-stream")
_CLOSE = (b"connection", b"close")
_HEADER_LENGTH = b"inference-header-content-length"
_CLOSES_CONNECTION = frozenset({408})
"""Statuses after which the connection is closed: the client stalled mid-request."""


class _Disconnected(Exception):
    """The client went away before its body arrived."""


def _json_headers(size: int) -> list[tuple[bytes, bytes]]:
    return [_JSON, (b"content-length", str(size).encode())]


async def _respond(
    send: Send, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers if headers is not None else _json_headers(len(body)),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, data: Any, status: int = 200) -> None:
    await _respond(send, status, orjson.dumps(data))


async def _respond_error(send: Send, exc: BaseException) -> None:
    status = _errors.http_status(exc)
    body = orjson.dumps({"error": _errors.message(exc)})
    headers = _json_headers(len(body))
    retry = _errors.retry_after_s(exc)
    if retry is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry))).encode()))
    if status in _CLOSES_CONNECTION:
        headers.append(_CLOSE)
    await _respond(send, status, body, headers)


@dataclass(frozen=True, slots=True)
class _Route:
    """One line of the route table: a method, a path pattern and its handler."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    work: bool = True
    """Counted as work: drained on shutdown, refused once draining (not the health checks)."""


class HttpApp:
    """The ASGI application serving one :class:`Backend`."""

    def __init__(
        self, backend: Backend, *, max_request_size_bytes: int, body_timeout_s: float = 10.0
    ) -> None:
        self.backend = backend
        self.max_request_size_bytes = max_request_size_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        backend = self.backend
        counted = False
        try:
            route, params = _route(scope["method"], scope["path"])
            if route.work:
                backend.refuse_while_draining()
                backend.active += 1
                counted = True
            await route.handler(self, scope, receive, send, **params)
        except _Disconnected:
            return
        except asyncio.CancelledError:
            # The drain ran out while this request was still running: a 503 that says so
            # (uvicorn would send a text/plain 500). The task ends here either way.
            with contextlib.suppress(Exception):
                await _respond_error(send, ShutdownError("the server stopped before answering"))
        except Exception as exc:
            await _respond_error(send, exc)
        finally:
            if counted:
                backend.active -= 1

    # -- request bodies ----------------------------------------------------------------

    async def _read_body(
        self, scope: Scope, receive: Receive, on_first: Callable[[bytes], None] | None = None
    ) -> bytes:
        """The request body; ``on_first`` sees its first part when more is to come."""
        limit = self.max_request_size_bytes
        encoding = b""
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise InvalidInputError("header Content-Length is not an integer") from None
                if declared > limit:
                    raise PayloadTooLargeError(
                        f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                        f"(--max-request-size-bytes)"
                    )
            elif key == b"content-encoding":
                encoding = value.lower()
        timeout_s = self.body_timeout_s
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                body: bytes = message.get("body", b"")
                if message.get("more_body", False):
                    if on_first is not None:
                        on_first(body)
                    chunks = [body]
                    size = len(body)
                    while True:
                        deadline.reschedule(loop.time() + timeout_s)
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            raise _Disconnected
                        chunk = message.get("body", b"")
                        size += len(chunk)
                        if size > limit:
                            raise PayloadTooLargeError(
                                f"request body exceeds the limit of {limit} bytes "
                                f"(--max-request-size-bytes)"
                            )
                        chunks.append(chunk)
                        if not message.get("more_body", False):
                            break
                    body = b"".join(chunks)
        except TimeoutError:
            raise _errors.BodyTimeoutError(
                f"the request body stopped arriving: nothing for {timeout_s:g} s "
                f"(--http-body-timeout-s)"
            ) from None
        if encoding and encoding != b"identity":
            body = _decompress(body, encoding, limit)
        return body

    async def _json_body(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        body = await self._read_body(scope, receive)
        if not body.strip():
            return {}
        data = loads(body)
        if not isinstance(data, dict):
            raise InvalidInputError("the request body must be a JSON object")
        return data

    # -- handlers (see _ROUTES) --------------------------------------------------------

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str
    ) -> None:
        start = time.perf_counter_ns()
        backend = self.backend
        found = backend.manager.get(name, version)
        declared = next((v for k, v in scope["headers"] if k == _HEADER_LENGTH), None)

        def admit_early(first: bytes) -> None:
            """Refuse an overloaded model's request before reading the rest of its body."""
            try:
                length = int(declared) if declared is not None else -1
                if not 0 < length <= len(first):
                    return
                params = loads(first[:length]).get("parameters") or {}
                timeout_us = int_param(params.get("timeout", 0), "timeout")
            except (EdgeTierError, ValueError, AttributeError):
                return  # a malformed request: the full decode says what is wrong
            try:
                found.batcher.check_admission(timeout_us)
            except EdgeTierError:
                found.stats.record_failure(time.perf_counter_ns() - start)
                raise

        body = await self._read_body(scope, receive, admit_early)
        header_length = parse_header_length(declared, len(body))
        found = backend.manager.get(name, version)  # may have been reloaded meanwhile
        try:
            request = decode_request(body, header_length, found, backend.shm)
        except EdgeTierError:
            found.stats.record_failure(time.perf_counter_ns() - start)
            raise
        outputs = await run(backend.manager, found, request, backend.shm, start)
        payload, json_size = encode_response(found, request, outputs)
        if json_size is None:
            await _respond(send, 200, payload)
        else:
            await _respond(
                send,
                200,
                payload,
                [
                    _OCTET,
                    (b"content-length", str(len(payload)).encode()),
                    (_HEADER_LENGTH, str(json_size).encode()),
                ],
            )

    async def _live(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _respond(send, 200 if self.backend.live else 503)

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _respond(send, 200 if self.backend.ready else 503)

    async def _server_metadata(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _respond_json(send, self.backend.server_metadata)

    async def _model_metadata(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str
    ) -> None:
        await _respond_json(send, self.backend.model_metadata(name, version))

    async def _model_ready(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str
    ) -> None:
        self.backend.manager.get(name, version)
        await _respond(send, 200)

    async def _model_config(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str
    ) -> None:
        await _respond_json(send, self.backend.model_config(name, version))

    async def _model_stats(
        self, scope: Scope, receive: Receive, send: Send, name: str = "", version: str = ""
    ) -> None:
        await _respond_json(send, self.backend.statistics(name, version))

    async def _repository_index(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._json_body(scope, receive)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInputError(f"field 'ready' must be true or false, got {ready!r}")
        await _respond_json(send, self.backend.repository_index(ready_only=ready))

    async def _model_control(
        self, scope: Scope, receive: Receive, send: Send, name: str, action: str
    ) -> None:
        body = await self._json_body(scope, receive)
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInputError("field 'parameters' must be a JSON object")
        if action == "load":
            await self.backend.load(name, params)
        else:
            await self.backend.unload(name)
        await _respond(send, 200)

    async def _shm_status(
        self, scope: Scope, receive: Receive, send: Send, region: str = ""
    ) -> None:
        await _respond_json(send, self.backend.shm_status(region))

    async def _shm_register(self, scope: Scope, receive: Receive, send: Send, region: str) -> None:
        body = await self._json_body(scope, receive)
        self.backend.shm_register(
            region, body.get("key"), body.get("offset", 0), body.get("byte_size")
        )
        await _respond(send, 200)

    async def _shm_unregister(
        self, scope: Scope, receive: Receive, send: Send, region: str = ""
    ) -> None:
        await self._read_body(scope, receive)
        self.backend.shm_unregister(region)
        await _respond(send, 200)

    async def _no_cuda_shm(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise UnsupportedError(
            "CUDA shared memory is not supported by this server; use system shared "
            "memory (/v2/systemsharedmemory) or send the data in the request"
        )


_MODEL = r"v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]*))?"
_REGION = r"(?:/region/(?P<region>[^/]+))?"


def _r(method: str, pattern: str, handler: Handler, *, work: bool = True) -> _Route:
    return _Route(method, re.compile(pattern), handler, work)


_ROUTES: tuple[_Route, ...] = (
    _r("POST", _MODEL + "/infer", HttpApp._infer),  # first: the hot path
    _r("GET", "v2/health/live", HttpApp._live, work=False),
    _r("GET", "v2/health/ready", HttpApp._ready, work=False),
    _r("GET", "v2", HttpApp._server_metadata),
    _r("GET", "v2/models/stats", HttpApp._model_stats),
    _r("GET", _MODEL, HttpApp._model_metadata),
    _r("GET", _MODEL + "/ready", HttpApp._model_ready),
    _r("GET", _MODEL + "/config", HttpApp._model_config),
    _r("GET", _MODEL + "/stats", HttpApp._model_stats),
    _r("POST", "v2/repository/index", HttpApp._repository_index),
    _r(
        "POST",
        r"v2/repository/models/(?P<name>[^/]+)/(?P<action>load|unload)",
        HttpApp._model_control,
    ),
    _r("GET", "v2/systemsharedmemory" + _REGION + "/status", HttpApp._shm_status),
    _r("POST", "v2/systemsharedmemory/region/(?P<region>[^/]+)/register", HttpApp._shm_register),
    _r("POST", "v2/systemsharedmemory" + _REGION + "/unregister", HttpApp._shm_unregister),
    _r("*", "v2/cudasharedmemory(?:/.*)?", HttpApp._no_cuda_shm),
)


def _route(method: str, path: str) -> tuple[_Route, dict[str, str]]:
    """The route of a request and its path parameters; NotFoundError when none fits."""
    trimmed = path.strip("/")
    for route in _ROUTES:
        if route.method != method and route.method != "*":
            continue
        found = route.pattern.fullmatch(trimmed)
        if found is not None:
            return route, found.groupdict("")  # "": a part the path leaves out
    raise NotFoundError(f"no route for {method} {path}")


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding == b"gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        inflater = zlib.decompressobj(zlib.MAX_WBITS)
    else:
        raise InvalidInputError(
            f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; "
            f"use gzip, deflate or none"
        )
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"request body is not valid {encoding.decode()}: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLargeError(
            f"decompressed request body exceeds the limit of {limit} bytes "
            f"(--max-request-size-bytes)"
        )
    if not inflater.eof:
        raise InvalidInputError(f"request body is a truncated {encoding.decode()} stream")
    return out


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

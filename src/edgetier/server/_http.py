"""KServe v2 over HTTP/REST: a raw ASGI app (no framework in the hot path).

Routes follow Triton's HTTP API: health, server and model metadata, config, infer (JSON
and binary tensor data), statistics, the model repository extension and the system
shared-memory extension. Errors are ``{"error": "..."}`` with the status the exception
maps to; a request body over the limit is refused with 413 before it is read.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from edgetier.errors import (
    EdgeTierError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedError,
)
from edgetier.server import _errors
from edgetier.server._backend import Backend
from edgetier.server._core import run
from edgetier.server._http_codec import decode_request, encode_response, loads, parse_header_length

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_OCTET = (b"content-type", b"application/octet-stream")
_HEADER_LENGTH = b"inference-header-content-length"


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
    await _respond(send, status, body, headers)


class HttpApp:
    """The ASGI application serving one :class:`Backend`."""

    def __init__(self, backend: Backend, *, max_request_size_bytes: int) -> None:
        self.backend = backend
        self.max_request_size_bytes = max_request_size_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        try:
            await self._dispatch(scope, receive, send)
        except _Disconnected:
            return
        except Exception as exc:
            await _respond_error(send, exc)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
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
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body: bytes = message.get("body", b"")
        if message.get("more_body", False):
            chunks = [body]
            size = len(body)
            while True:
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
        if encoding and encoding != b"identity":
            body = _decompress(body, encoding, limit)
        return body

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        parts = path.strip("/").split("/")
        method: str = scope["method"]
        if not parts or parts[0] != "v2":
            raise NotFoundError(f"no route for {method} {path}")
        n = len(parts)
        backend = self.backend
        if n >= 3 and parts[1] == "models" and parts[2] != "stats":
            name = parts[2]
            version = ""
            rest = parts[3:]
            if len(rest) >= 2 and rest[0] == "versions":
                version = rest[1]
                rest = rest[2:]
            action = rest[0] if rest else ""
            if len(rest) > 1:
                raise NotFoundError(f"no route for {method} {path}")
            if action == "infer" and method == "POST":
                await self._infer(scope, receive, send, name, version)
            elif action == "" and method == "GET":
                await _respond_json(send, backend.model_metadata(name, version))
            elif action == "ready" and method == "GET":
                backend.manager.get(name, version)
                await _respond(send, 200)
            elif action == "config" and method == "GET":
                await _respond_json(send, backend.model_config(name, version))
            elif action == "stats" and method == "GET":
                await _respond_json(send, backend.statistics(name, version))
            else:
                raise NotFoundError(f"no route for {method} {path}")
            return
        if n == 1 and method == "GET":
            await _respond_json(send, backend.server_metadata)
        elif n == 3 and parts[1] == "health" and method == "GET":
            if parts[2] == "live":
                await _respond(send, 200 if backend.live else 503)
            elif parts[2] == "ready":
                await _respond(send, 200 if backend.ready else 503)
            else:
                raise NotFoundError(f"no route for {method} {path}")
        elif n == 3 and parts[1] == "models" and parts[2] == "stats" and method == "GET":
            await _respond_json(send, backend.statistics())
        elif n >= 2 and parts[1] == "repository":
            await self._repository(scope, receive, send, parts, method)
        elif n >= 2 and parts[1] == "systemsharedmemory":
            await self._shm(scope, receive, send, parts, method)
        elif n >= 2 and parts[1] == "cudasharedmemory":
            raise UnsupportedError(
                "CUDA shared memory is not supported by this server; use system shared "
                "memory (/v2/systemsharedmemory) or send the data in the request"
            )
        else:
            raise NotFoundError(f"no route for {method} {path}")

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version_str: str
    ) -> None:
        start = time.perf_counter_ns()
        backend = self.backend
        version = backend.manager.get(name, version_str)
        body = await self._read_body(scope, receive)
        header_length = None
        for key, value in scope["headers"]:
            if key == _HEADER_LENGTH:
                header_length = parse_header_length(value, len(body))
                break
        version = backend.manager.get(name, version_str)  # may have been reloaded meanwhile
        try:
            request = decode_request(body, header_length, version, backend.shm)
        except EdgeTierError:
            version.stats.record_failure(time.perf_counter_ns() - start)
            raise
        outputs = await run(backend.manager, version, request, backend.shm, start)
        payload, json_size = encode_response(version, request, outputs)
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

    async def _json_body(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        body = await self._read_body(scope, receive)
        if not body.strip():
            return {}
        data = loads(body)
        if not isinstance(data, dict):
            raise InvalidInputError("the request body must be a JSON object")
        return data

    async def _repository(
        self, scope: Scope, receive: Receive, send: Send, parts: list[str], method: str
    ) -> None:
        backend = self.backend
        if method != "POST":
            raise NotFoundError(f"no route for {method} /{'/'.join(parts)}")
        if len(parts) == 3 and parts[2] == "index":
            body = await self._json_body(scope, receive)
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidInputError(f"field 'ready' must be true or false, got {ready!r}")
            await _respond_json(send, backend.repository_index(ready_only=ready))
            return
        if len(parts) == 5 and parts[2] == "models" and parts[4] in ("load", "unload"):
            body = await self._json_body(scope, receive)
            params = body.get("parameters") or {}
            if not isinstance(params, dict):
                raise InvalidInputError("field 'parameters' must be a JSON object")
            if parts[4] == "load":
                await backend.load(parts[3], params)
            else:
                await backend.unload(parts[3])
            await _respond(send, 200)
            return
        raise NotFoundError(f"no route for POST /{'/'.join(parts)}")

    async def _shm(
        self, scope: Scope, receive: Receive, send: Send, parts: list[str], method: str
    ) -> None:
        backend = self.backend
        region = ""
        rest = parts[2:]
        if len(rest) >= 2 and rest[0] == "region":
            region, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else ""
        if action == "status" and method == "GET":
            await _respond_json(send, backend.shm_status(region))
        elif action == "register" and method == "POST" and region:
            body = await self._json_body(scope, receive)
            backend.shm_register(
                region, body.get("key"), body.get("offset", 0), body.get("byte_size")
            )
            await _respond(send, 200)
        elif action == "unregister" and method == "POST":
            await self._read_body(scope, receive)
            backend.shm_unregister(region)
            await _respond(send, 200)
        else:
            raise NotFoundError(f"no route for {method} /{'/'.join(parts)}")


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

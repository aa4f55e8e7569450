"""A fake controller for the agent's tests: the agent protocol of ``edgetier.control``
(``/v1``) spoken with the shared pydantic messages, as an ASGI app on uvicorn in a thread
on a free port. It records what it receives, checks the outbox's sequences as the real
controller must (unique by (node, sequence): a duplicate is counted and ignored, a gap is
refused with 409 naming the expected sequence), and can be told to go away and come back
on the same port::

    with FakeController(tokens={TOKEN}) as fake:
        fake.set_desired("edge-1", [assignment])
        fake.stop(); ...; fake.start()
        fake.stored("edge-1")            # the records it holds, in order

Faults on demand: ``lose_answers`` (store a record batch, then answer 500 as if the
answer were lost), ``forget_records_after(node, n)`` (the controller lost what came after
n), ``corrupt`` (artifacts sent with wrong bytes).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from pydantic import ValidationError

from edgetier.control import (
    Assignment,
    DesiredState,
    EnrolRequest,
    EnrolResponse,
    Heartbeat,
    HeartbeatReply,
    ModelVersionInfo,
    Record,
    RecordAck,
    RecordBatch,
)
from edgetier.testing import free_port

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_WAIT_S = 60.0


@dataclass
class _Node:
    name: str
    credential: str
    request: EnrolRequest
    desired: DesiredState
    acked: int = 0
    records: dict[int, Record] = field(default_factory=dict)


class FakeController:
    """The controller side of the agent protocol, for tests."""

    def __init__(
        self,
        *,
        tokens: set[str] | None = None,
        heartbeat_interval_s: float = 0.2,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.tokens = set(tokens or ())
        self.heartbeat_interval_s = heartbeat_interval_s
        self._lock = threading.Lock()
        self.nodes: dict[str, _Node] = {}
        self.revoked: set[str] = set()
        self.enrolments: list[EnrolRequest] = []
        self.refused: list[tuple[str, int]] = []  # (path, status) of every refusal
        self.heartbeats: list[tuple[str, Heartbeat]] = []
        self.renewals: list[str] = []
        self.polls: list[tuple[str, str | None, int]] = []  # node, If-None-Match, status
        self.batches: list[list[int]] = []  # the sequences of every batch received
        self.duplicates = 0
        self.artifacts: dict[str, bytes] = {}
        self.downloads: list[str] = []
        self.corrupt: set[str] = set()
        self.lose_answers = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- the test's side -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeController:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (again) on the same port."""
        assert self._thread is None, "already running"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, name="fake-controller", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the fake controller did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Go away: close the port and every connection, as a killed controller does."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(15)
        assert not self._thread.is_alive(), "the fake controller did not stop"
        self._server, self._thread = None, None

    def add_artifact(self, model: str, version: int, data: bytes) -> ModelVersionInfo:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._lock:
            self.artifacts[digest] = data
        return ModelVersionInfo(model=model, version=version, digest=digest, size_bytes=len(data))

    def set_desired(self, node: str, assignments: list[Assignment]) -> DesiredState:
        """Give the node new desired state (its generation goes up by one)."""
        with self._lock:
            held = self.nodes[node]
            held.desired = DesiredState(
                node=node, generation=held.desired.generation + 1, assignments=assignments
            )
            return held.desired

    def revoke(self, node: str) -> None:
        with self._lock:
            self.revoked.add(self.nodes[node].credential)

    def stored(self, node: str) -> list[Record]:
        with self._lock:
            held = self.nodes.get(node)
            return [] if held is None else [held.records[s] for s in sorted(held.records)]

    def forget_records_after(self, node: str, sequence: int) -> None:
        """The controller lost every record after ``sequence`` (a restored backup)."""
        with self._lock:
            held = self.nodes[node]
            held.records = {s: r for s, r in held.records.items() if s <= sequence}
            held.acked = min(held.acked, sequence)

    def last_heartbeat(self, node: str) -> Heartbeat | None:
        with self._lock:
            found = [h for n, h in self.heartbeats if n == node]
        return found[-1] if found else None

    # -- the ASGI app --------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        parts = path.strip("/").split("/")
        try:
            if (method, path) == ("POST", "/v1/enrol"):
                status, payload, extra = self._enrol(body)
            elif parts[:2] == ["v1", "nodes"] and len(parts) == 4:
                node = self._authorise(headers, parts[2])
                if (method, parts[3]) == ("POST", "heartbeat"):
                    status, payload, extra = self._heartbeat(node, body)
                elif (method, parts[3]) == ("POST", "credential"):
                    status, payload, extra = self._renew(node, headers)
                elif (method, parts[3]) == ("GET", "desired"):
                    status, payload, extra = await self._desired(node, headers, query)
                elif (method, parts[3]) == ("POST", "records"):
                    status, payload, extra = self._records(node, body)
                else:
                    raise _Refused(404, f"no route {method} {path}")
            elif method == "GET" and parts[:2] == ["v1", "artifacts"] and len(parts) == 3:
                node = self._authorise(headers, None)
                await self._artifact(node, parts[2], send)
                return
            else:
                raise _Refused(404, f"no route {method} {path}")
        except _Refused as refusal:
            with self._lock:
                self.refused.append((path, refusal.status))
            status, payload, extra = refusal.status, {"error": refusal.message}, {}
            payload.update(refusal.fields)
        await _respond(send, status, payload, extra)

    def _enrol(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            request = EnrolRequest.model_validate_json(body)
        except ValidationError as exc:
            raise _Refused(422, str(exc)) from None
        with self._lock:
            self.enrolments.append(request)
            if request.token not in self.tokens:
                raise _Refused(401, "enrolment token unknown, used, expired or revoked")
            self.tokens.discard(request.token)  # one time only
            credential = f"node-{request.name}-{len(self.enrolments)}-" + "x" * 16
            self.nodes[request.name] = _Node(
                request.name, credential, request, DesiredState(node=request.name, generation=0)
            )
        reply = EnrolResponse(
            node=request.name,
            credential=credential,
            expires_at=datetime.now(UTC) + timedelta(days=30),
        )
        return 201, reply.model_dump(mode="json"), {}

    def _authorise(self, headers: dict[str, str], node: str | None) -> str:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise _Refused(401, "Authorization: Bearer <credential> required")
        credential = auth.removeprefix("Bearer ")
        with self._lock:
            owner = next((n.name for n in self.nodes.values() if n.credential == credential), None)
            if owner is None or credential in self.revoked:
                raise _Refused(401, "node credential unknown, revoked or expired")
        if node is not None and node != owner:
            raise _Refused(403, f"credential of node {owner!r} may not act on node {node!r}")
        return owner

    def _renew(self, node: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """A fresh credential for the node; the one presented is revoked."""
        with self._lock:
            held = self.nodes[node]
            self.revoked.add(held.credential)
            held.credential = f"node-{node}-renewed-{len(self.revoked)}-" + "x" * 16
            self.renewals.append(node)
        reply = EnrolResponse(
            node=node, credential=held.credential, expires_at=datetime.now(UTC) + timedelta(days=30)
        )
        return 200, reply.model_dump(mode="json"), {}

    def _heartbeat(self, node: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            heartbeat = Heartbeat.model_validate_json(body)
        except ValidationError as exc:
            raise _Refused(422, str(exc)) from None
        with self._lock:
            self.heartbeats.append((node, heartbeat))
            generation = self.nodes[node].desired.generation
        reply = HeartbeatReply(
            desired_generation=generation, heartbeat_interval_s=self.heartbeat_interval_s
        )
        return 200, reply.model_dump(mode="json"), {}

    async def _desired(
        self, node: str, headers: dict[str, str], query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            wait_s = min(float(query.get("wait_s", "0")), MAX_WAIT_S)
        except ValueError:
            raise _Refused(400, f"wait_s: not a number: {query.get('wait_s')!r}") from None
        match = headers.get("if-none-match")
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                desired = self.nodes[node].desired
            etag = f'"{desired.generation}"'
            server = self._server
            leaving = server is None or server.should_exit
            if match != etag or time.monotonic() >= deadline or leaving:
                break
            await asyncio.sleep(0.02)
        status = 304 if match == etag else 200
        with self._lock:
            self.polls.append((node, match, status))
        if status == 304:
            return 304, None, {"ETag": etag}
        return 200, desired.model_dump(mode="json"), {"ETag": etag}

    def _records(self, node: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            batch = RecordBatch.model_validate_json(body)
        except ValidationError as exc:
            raise _Refused(422, str(exc)) from None
        with self._lock:
            held = self.nodes[node]
            self.batches.append([r.sequence for r in batch.records])
            duplicates = 0
            expected = held.acked + 1
            for i, record in enumerate(batch.records):  # checked whole before storing any
                if record.sequence > expected:
                    raise _Refused(
                        409,
                        f"records[{i}].sequence: {record.sequence} leaves a gap; "
                        f"expected {held.acked + 1}",
                        expected=held.acked + 1,
                    )
                expected = max(expected, record.sequence + 1)
            for record in batch.records:
                if record.sequence <= held.acked:
                    duplicates += 1
                    continue
                held.records[record.sequence] = record
                held.acked = record.sequence
            self.duplicates += duplicates
            acked = held.acked
            if self.lose_answers > 0:
                self.lose_answers -= 1
                raise _Refused(500, "stored, but the answer is lost on the way")
        return 200, RecordAck(acked_through=acked, duplicates=duplicates).model_dump(), {}

    async def _artifact(self, node: str, name: str, send: Send) -> None:
        with self._lock:
            assigned = {
                a.model.digest for a in self.nodes[node].desired.assignments if a.model is not None
            }
            data = self.artifacts.get(name)
            self.downloads.append(name)
        if data is None:
            await _respond(send, 404, {"error": f"no artifact {name}"}, {})
            return
        if name not in assigned:
            await _respond(send, 403, {"error": f"artifact {name} is not assigned to {node}"}, {})
            return
        if name in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"digest", f"sha-256={name.removeprefix('sha256:')}".encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


class _Refused(Exception):
    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


async def _respond(send: Send, status: int, payload: Any, extra: dict[str, str]) -> None:
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    if payload is not None:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

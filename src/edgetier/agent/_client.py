"""The controller's agent API (``/v1``) as the agent calls it, over httpx.

Each call maps what the controller answered to the agent's errors where it enters: a
refused or reset connection, a timeout and a 5xx are :class:`ControllerUnreachableError`
(the agent goes on from its store), a 401 is :class:`CredentialRejectedError`, a 409 to a
record batch is :class:`OutboxGapError` with the sequence the controller expects.

Given several addresses (replicas of one controller), a call that finds its replica
unreachable (or answering 5xx) is tried on the next one at once, and the client stays
with the replica that answered; only when every address failed is the controller
unreachable::

    async with ControllerClient(["http://ctl-a:8080", "http://ctl-b:8080"]) as client:
        reply = await client.enrol(EnrolRequest(token=T, name="edge-1", ...))
        client.credential = reply.credential
        desired = await client.desired("edge-1", etag=None, wait_s=30)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import httpx

from edgetier.agent._errors import (
    ControllerError,
    ControllerUnreachableError,
    CredentialRejectedError,
    OutboxGapError,
)
from edgetier.control import (
    DesiredState,
    EnrolRequest,
    EnrolResponse,
    Heartbeat,
    HeartbeatReply,
    RecordAck,
    RecordBatch,
)

__all__ = ["ControllerClient", "error_text", "etag_of"]

log = logging.getLogger("edgetier.agent")

_CHUNK_BYTES = 1 << 20
_EXPECTED = re.compile(r"expect(?:ed|s)?\D{0,20}(\d+)", re.IGNORECASE)


def etag_of(generation: int) -> str:
    """The ETag of a desired state: its generation, quoted (RFC 9110)."""
    return f'"{generation}"'


class ControllerClient:
    """One agent's connection to the controller (one address or its replicas');
    ``credential`` is set once enrolled."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        credential: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("ControllerClient: at least one controller address is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self._current = 0
        self.credential = credential
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"User-Agent": "edgetier-agent"},
        )

    async def __aenter__(self) -> ControllerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def base_url(self) -> str:
        """The address in use: the last one that answered."""
        return self.urls[self._current]

    def _fail_over(self, url: str, why: str) -> None:
        """Move on from ``url`` (unless another call moved on already)."""
        if len(self.urls) > 1 and self.base_url == url:
            self._current = (self._current + 1) % len(self.urls)
            log.warning("controller %s: %s; trying %s", url, why, self.base_url)

    # -- the calls -----------------------------------------------------------------------

    async def enrol(self, request: EnrolRequest) -> EnrolResponse:
        response = await self._request("POST", "/v1/enrol", json=_json(request), auth=False)
        return EnrolResponse.model_validate_json(response.content)

    async def renew(self, node: str) -> EnrolResponse:
        """A fresh node credential; the controller revokes the one presented."""
        response = await self._request("POST", f"/v1/nodes/{node}/credential")
        return EnrolResponse.model_validate_json(response.content)

    async def heartbeat(self, node: str, heartbeat: Heartbeat) -> HeartbeatReply:
        response = await self._request("POST", f"/v1/nodes/{node}/heartbeat", json=_json(heartbeat))
        return HeartbeatReply.model_validate_json(response.content)

    async def desired(
        self, node: str, *, etag: str | None, wait_s: float
    ) -> tuple[DesiredState, str | None] | None:
        """The node's desired state and its ETag; None when it did not change within
        ``wait_s`` (304 to ``If-None-Match: etag``)."""
        headers = {"If-None-Match": etag} if etag is not None else {}
        response = await self._request(
            "GET",
            f"/v1/nodes/{node}/desired",
            params={"wait_s": f"{wait_s:g}"},
            headers=headers,
            timeout_s=wait_s + self.timeout_s,
            allow=frozenset({304}),
        )
        if response.status_code == 304:
            return None
        desired = DesiredState.model_validate_json(response.content)
        return desired, response.headers.get("ETag")

    async def records(self, node: str, batch: RecordBatch) -> RecordAck:
        response = await self._request("POST", f"/v1/nodes/{node}/records", json=_json(batch))
        return RecordAck.model_validate_json(response.content)

    async def download(self, digest: str, target: Path, *, timeout_s: float) -> int:
        """Stream ``/v1/artifacts/{digest}`` into ``target`` (a temporary file) and check
        its sha256 on the way; returns the size. A digest that does not match raises
        ControllerError and leaves no file."""
        expected = digest.removeprefix("sha256:")
        sha = hashlib.sha256()
        size = 0
        url = self.base_url
        try:
            async with self._http.stream(
                "GET",
                f"{url}/v1/artifacts/{digest}",
                headers=self._auth(),
                timeout=httpx.Timeout(self.timeout_s, read=timeout_s),
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    if response.status_code >= 500:
                        self._fail_over(url, f"answered {response.status_code}")
                    _raise_for(response, "GET", f"/v1/artifacts/{digest}")
                with target.open("wb") as out:
                    async for chunk in response.aiter_bytes(_CHUNK_BYTES):
                        sha.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.TransportError as exc:
            target.unlink(missing_ok=True)
            self._fail_over(url, _describe(exc))  # the agent's next try goes there
            raise ControllerUnreachableError(
                f"GET {url}/v1/artifacts/{digest}: {_describe(exc)}"
            ) from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        if sha.hexdigest() != expected:
            target.unlink(missing_ok=True)
            raise ControllerError(
                f"artifact {digest}: the {size} bytes received hash to "
                f"sha256:{sha.hexdigest()}; refused"
            )
        return size

    # -- plumbing ------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if self.credential is None:
            return {}
        return {"Authorization": f"Bearer {self.credential}"}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        timeout_s: float | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        presented = self.credential
        sent = {**(self._auth() if auth else {}), **(headers or {})}
        failures = []
        for _ in self.urls:  # each address once, from the one in use
            url = self.base_url
            try:
                response = await self._http.request(
                    method,
                    url + path,
                    json=json,
                    params=params,
                    headers=sent,
                    timeout=httpx.Timeout(timeout_s) if timeout_s is not None else None,
                )
            except httpx.TransportError as exc:
                failures.append(f"{method} {url}{path}: {_describe(exc)}")
                self._fail_over(url, _describe(exc))
                continue
            if response.status_code in allow or 200 <= response.status_code < 300:
                return response
            if response.status_code == 401 and auth and self.credential != presented:
                # renewed while this request was in flight: the controller revoked the one
                # sent; send it again with the new one
                return await self._request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers=headers,
                    auth=auth,
                    timeout_s=timeout_s,
                    allow=allow,
                )
            if response.status_code >= 500 and len(self.urls) > 1:
                failures.append(f"{method} {url}{path}: {response.status_code}")
                self._fail_over(url, f"answered {response.status_code}")
                if len(failures) < len(self.urls):
                    continue
            _raise_for(response, method, path)
        raise ControllerUnreachableError("; ".join(failures))


def _json(message: Any) -> Any:
    return message.model_dump(mode="json", by_alias=True)


def _describe(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


def _raise_for(response: httpx.Response, method: str, path: str) -> NoReturn:
    status = response.status_code
    message = error_text(response)
    where = f"{method} {path}: {status}"
    if status == 401:
        raise CredentialRejectedError(f"{where}: {message}", status=401)
    if status == 409 and path.endswith("/records"):
        expected = _expected_sequence(response, message)
        if expected is not None:
            raise OutboxGapError(f"{where}: {message}", expected=expected)
    if status >= 500 or status in (408, 429):
        raise ControllerUnreachableError(f"{where}: {message}", status=status)
    raise ControllerError(f"{where}: {message}", status=status)


def error_text(response: httpx.Response) -> str:
    """What an error answer says: the ``error`` (or ``detail``) of its JSON body, else its
    text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]


def _expected_sequence(response: httpx.Response, message: str) -> int | None:
    """The sequence a 409 names: a field ``expected`` (or ``expected_sequence``) of the
    JSON body, else the number after "expected" in its message."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("expected", "expected_sequence", "expected_sequence_number"):
            value = body.get(key)
            if isinstance(value, int) and value >= 1:
                return value
    found = _EXPECTED.search(message)
    return int(found.group(1)) if found else None

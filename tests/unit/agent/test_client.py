"""What the controller answers, mapped to the agent's errors where it enters."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from edgetier.agent import (
    ControllerError,
    ControllerUnreachableError,
    CredentialRejectedError,
    OutboxGapError,
)
from edgetier.agent._client import ControllerClient
from edgetier.control import DesiredState, Record, RecordBatch

BATCH = RecordBatch(records=[Record(sequence=5, time=datetime.now(UTC), kind="e")])


def _client(handler: httpx.MockTransport) -> ControllerClient:
    return ControllerClient("http://controller", credential="cred", transport=handler)


async def test_a_409_names_the_expected_sequence_in_a_field_or_in_its_message() -> None:
    answers = [
        httpx.Response(409, json={"error": "gap", "expected": 3}),
        httpx.Response(409, json={"error": "records[0].sequence: 5 leaves a gap; expected 3"}),
    ]
    async with _client(httpx.MockTransport(lambda r: answers.pop(0))) as client:
        for _ in range(2):
            with pytest.raises(OutboxGapError) as caught:
                await client.records("edge-1", BATCH)
            assert caught.value.expected == 3


async def test_401_is_a_refused_credential_and_5xx_or_no_answer_is_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("heartbeat"):
            assert request.headers["Authorization"] == "Bearer cred"
            return httpx.Response(401, json={"error": "node credential revoked"})
        if request.url.path.endswith("records"):
            return httpx.Response(503, text="busy")
        raise httpx.ConnectError("refused", request=request)

    async with _client(httpx.MockTransport(handler)) as client:
        from edgetier.control import Heartbeat

        with pytest.raises(CredentialRejectedError, match="node credential revoked"):
            await client.heartbeat("edge-1", Heartbeat())
        with pytest.raises(ControllerUnreachableError, match="503"):
            await client.records("edge-1", BATCH)
        with pytest.raises(ControllerUnreachableError, match="refused"):
            await client.desired("edge-1", etag=None, wait_s=1)


async def test_desired_sends_if_none_match_and_a_304_is_no_change() -> None:
    seen: list[httpx.Request] = []
    desired = DesiredState(node="edge-1", generation=4)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("If-None-Match") == '"4"':
            return httpx.Response(304)
        return httpx.Response(200, json=desired.model_dump(mode="json"), headers={"ETag": '"4"'})

    async with _client(httpx.MockTransport(handler)) as client:
        got = await client.desired("edge-1", etag=None, wait_s=30)
        assert got == (desired, '"4"')
        assert await client.desired("edge-1", etag='"4"', wait_s=30) is None
    assert seen[1].url.params["wait_s"] == "30"
    assert seen[1].url.path == "/v1/nodes/edge-1/desired"


async def test_a_download_is_checked_against_its_digest(tmp_path: Path) -> None:
    data = b"model bytes" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    sent = [data, data[:-1] + b"X"]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1/artifacts/{digest}"
        return httpx.Response(200, content=sent.pop(0))

    async with _client(httpx.MockTransport(handler)) as client:
        target = tmp_path / "a.part"
        assert await client.download(digest, target, timeout_s=5) == len(data)
        assert target.read_bytes() == data
        with pytest.raises(ControllerError, match="hash to sha256:"):
            await client.download(digest, target, timeout_s=5)
        assert not target.exists()  # nothing half-checked is left behind


async def test_other_refusals_carry_the_status_and_the_controllers_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, content=json.dumps({"error": "not your node"}))

    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(ControllerError, match="403: not your node") as caught:
            await client.records("edge-2", BATCH)
    assert caught.value.status == 403
    assert not isinstance(caught.value, ControllerUnreachableError | CredentialRejectedError)


async def test_a_call_fails_over_to_the_next_replica_and_stays_there() -> None:
    """Replica a refuses connections; b answers: the call succeeds on b, and the next call
    goes straight to b. A 5xx moves on the same way; with every replica down the error
    names each."""
    from edgetier.control import Heartbeat

    calls: list[str] = []
    down = {"a"}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        if request.url.host in down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.host == "c":
            return httpx.Response(503, json={"error": "database unavailable"})
        return httpx.Response(200, json={"desired_generation": 7, "heartbeat_interval_s": 1})

    transport = httpx.MockTransport(handler)
    urls = ["http://a:8080", "http://b:8080/"]
    async with ControllerClient(urls, credential="cred", transport=transport) as client:
        reply = await client.heartbeat("edge-1", Heartbeat())
        assert reply.desired_generation == 7 and calls == ["a", "b"]
        assert client.base_url == "http://b:8080"
        await client.heartbeat("edge-1", Heartbeat())
        assert calls == ["a", "b", "b"]  # it stays with the replica that answered
        down.add("b")
        with pytest.raises(ControllerUnreachableError) as caught:
            await client.heartbeat("edge-1", Heartbeat())
        assert "http://a:8080" in caught.value.message and "http://b:8080" in caught.value.message
    calls.clear()
    async with ControllerClient(
        ["http://c:1", "http://d:1"], credential="cred", transport=transport
    ) as client:
        await client.heartbeat("edge-1", Heartbeat())
        assert calls == ["c", "d"] and client.base_url == "http://d:1"


async def test_a_download_that_finds_its_replica_gone_is_tried_on_the_next(
    tmp_path: Path,
) -> None:
    data = b"weights"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, content=data)

    transport = httpx.MockTransport(handler)
    async with ControllerClient(["http://a", "http://b"], transport=transport) as client:
        with pytest.raises(ControllerUnreachableError, match="http://a"):
            await client.download(digest, tmp_path / "x", timeout_s=5)
        # the agent's retry goes to the next replica
        assert await client.download(digest, tmp_path / "x", timeout_s=5) == len(data)

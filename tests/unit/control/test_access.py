"""Access rules of the controller (issue 14, acceptance 3): every refusal with a clear
error — unauthenticated, a reused enrolment token, expired or revoked tokens, a node
asking for another node's state, a node credential on an operator call."""

from __future__ import annotations

import hashlib
import stat

from conftest import Api, Clock

from edgetier.control import ControllerSettings, ControlService
from edgetier.control._db import TokenRow


async def test_unauthenticated_and_malformed_requests_get_401(api: Api) -> None:
    answer = await api.http.get("/v1/nodes")
    assert answer.status_code == 401
    assert "missing credential" in answer.json()["error"]
    assert answer.headers["www-authenticate"] == "Bearer"
    answer = await api.http.get("/v1/nodes", headers={"Authorization": "Basic abc"})
    assert answer.status_code == 401 and "Bearer <token>" in answer.json()["error"]
    answer = await api.http.get("/v1/nodes", headers={"Authorization": "Bearer nonsense"})
    assert answer.status_code == 401 and "malformed token" in answer.json()["error"]
    forged = api.service.operator_token.rsplit(".", 1)[0] + ".forged"  # type: ignore[union-attr]
    answer = await api.http.get("/v1/nodes", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401 and "unknown token" in answer.json()["error"]


async def test_an_enrolment_token_works_once(api: Api) -> None:
    token = await api.enrol_token()
    body = {"token": token, "name": "edge-1", "tier": "edge", "profile": "jetson-xavier-nx"}
    first = await api.http.post("/v1/enrol", json=body)
    assert first.status_code == 201, first.text
    assert first.json()["node"] == "edge-1"
    again = await api.http.post("/v1/enrol", json={**body, "name": "edge-2"})
    assert again.status_code == 401
    assert "is already used by node 'edge-1'" in again.json()["error"]


async def test_expired_and_revoked_enrolment_tokens_say_which(api: Api, clock: Clock) -> None:
    expiring = await api.enrol_token(expires_in_s=60)
    clock.advance(61)
    body = {"token": expiring, "name": "edge-1", "tier": "edge", "profile": "jetson-xavier-nx"}
    answer = await api.http.post("/v1/enrol", json=body)
    assert answer.status_code == 401 and "expired at" in answer.json()["error"]

    revoked = await api.enrol_token()
    token_id = revoked.split("_", 1)[1].split(".")[0]
    gone = await api.http.delete(f"/v1/tokens/{token_id}", headers=api.operator)
    assert gone.status_code == 200 and gone.json()["state"] == "revoked"
    answer = await api.http.post("/v1/enrol", json={**body, "token": revoked})
    assert answer.status_code == 401 and "was revoked at" in answer.json()["error"]
    # a failed enrolment leaves no node behind
    nodes = await api.http.get("/v1/nodes", headers=api.operator)
    assert nodes.json() == []


async def test_node_credentials_expire_and_can_be_revoked(api: Api, clock: Clock) -> None:
    node = await api.enrol("edge-1")
    assert (
        await api.http.post("/v1/nodes/edge-1/heartbeat", json={}, headers=node)
    ).status_code == 200
    clock.advance(api.service.settings.node_credential_ttl_s + 1)
    answer = await api.http.post("/v1/nodes/edge-1/heartbeat", json={}, headers=node)
    assert answer.status_code == 401 and "node credential" in answer.json()["error"]
    assert "expired" in answer.json()["error"]

    other = await api.enrol("edge-2")
    tokens = (await api.http.get("/v1/tokens", headers=api.operator)).json()
    credential = next(t for t in tokens if t["kind"] == "node" and t["node"] == "edge-2")
    await api.http.delete(f"/v1/tokens/{credential['id']}", headers=api.operator)
    answer = await api.http.get("/v1/nodes/edge-2/desired", headers=other)
    assert answer.status_code == 401 and "was revoked" in answer.json()["error"]


async def test_a_node_may_act_on_its_own_node_only(api: Api) -> None:
    one = await api.enrol("edge-1")
    await api.enrol("edge-2")
    for method, path, body in [
        ("GET", "/v1/nodes/edge-2/desired", None),
        ("POST", "/v1/nodes/edge-2/heartbeat", {}),
        (
            "POST",
            "/v1/nodes/edge-2/records",
            {"records": [{"sequence": 1, "time": "2026-01-01T00:00:00Z", "kind": "x"}]},
        ),
    ]:
        answer = await api.http.request(method, path, json=body, headers=one)
        assert answer.status_code == 403, (path, answer.text)
        assert "may act on node 'edge-1' only, not on 'edge-2'" in answer.json()["error"]
    assert (await api.http.get("/v1/nodes/edge-1/desired", headers=one)).status_code == 200


async def test_node_and_enrolment_tokens_cannot_make_operator_calls(api: Api) -> None:
    node = await api.enrol("edge-1")
    answer = await api.http.get("/v1/nodes", headers=node)
    assert answer.status_code == 403
    assert "needs an operator token; a node credential was given" in answer.json()["error"]
    enrol = await api.enrol_token()
    answer = await api.http.get("/v1/nodes", headers={"Authorization": f"Bearer {enrol}"})
    assert answer.status_code == 403
    answer = await api.http.post("/v1/tokens", json={}, headers=node)
    assert answer.status_code == 403


async def test_tokens_are_stored_hashed_and_listed_without_secrets(api: Api) -> None:
    token = await api.enrol_token(description="for edge-1")
    with api.service.db.read() as session:
        rows = session.query(TokenRow).all()
    secret = token.split(".", 1)[1]
    assert all(secret not in (row.secret_sha256, row.id) for row in rows)
    assert any(row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest() for row in rows)
    listed = (await api.http.get("/v1/tokens", headers=api.operator)).json()
    assert {t["kind"] for t in listed} == {"operator", "enrol"}
    assert all("token" not in t for t in listed)
    assert next(t for t in listed if t["kind"] == "enrol")["description"] == "for edge-1"


async def test_revoking_an_unknown_token_is_404(api: Api) -> None:
    answer = await api.http.delete("/v1/tokens/nope", headers=api.operator)
    assert answer.status_code == 404 and "no token with id 'nope'" in answer.json()["error"]


def test_operator_token_file_is_private_and_kept_across_restarts(
    service: ControlService, clock: Clock
) -> None:
    path = service.settings.data_dir / "operator-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == service.operator_token
    again = ControlService(service.settings, clock=clock)
    again.start()
    assert again.operator_token == service.operator_token
    again.close()
    path.unlink()  # a removed file: a new token is written, the old one stays valid
    third = ControlService(
        ControllerSettings(
            data_dir=service.settings.data_dir, database_url=service.settings.database_url
        ),
        clock=clock,
    )
    third.start()
    assert third.operator_token != service.operator_token
    third.principal(f"Bearer {service.operator_token}").require_operator()
    third.close()

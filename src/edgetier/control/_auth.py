"""Tokens: operator tokens, one-time enrolment tokens and node credentials.

A token reads ``et<kind>_<id>.<secret>`` (``eto_``, ``ete_``, ``etn_``): the id finds the
row, the secret is never stored, only its SHA-256, which is compared in constant time.
Every refusal says why, so that an operator can act on it::

    token = issue(session, "enrol", expires_in_s=3600)       # the secret is shown once
    principal = authenticate(session, request_header, now)   # or AuthenticationError
    principal.require_node("edge-1")                          # or PermissionDeniedError
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session

from edgetier.control._db import TokenRow
from edgetier.errors import AuthenticationError, PermissionDeniedError

__all__ = [
    "Principal",
    "PrincipalCache",
    "TokenKind",
    "authenticate",
    "authenticate_until",
    "check_token",
    "issue",
    "parse_token",
    "revoke",
    "token_info",
]

TokenKind = Literal["operator", "enrol", "node"]
_PREFIX: dict[str, TokenKind] = {"eto": "operator", "ete": "enrol", "etn": "node"}
_LETTER = {kind: prefix for prefix, kind in _PREFIX.items()}
_WHAT = {"operator": "operator token", "enrol": "enrolment token", "node": "node credential"}
_A_WHAT = {
    "operator": "an operator token",
    "enrol": "an enrolment token",
    "node": "a node credential",
}


@dataclass(frozen=True)
class Principal:
    """Who a request comes from."""

    kind: TokenKind
    token_id: str
    node: str | None = None

    def require_operator(self) -> None:
        if self.kind != "operator":
            raise PermissionDeniedError(
                f"this call needs an operator token; {_A_WHAT[self.kind]} was given"
            )

    def require_node(self, node: str) -> None:
        """An operator may act for any node; a node credential for its own node only."""
        if self.kind == "operator":
            return
        if self.kind != "node":
            raise PermissionDeniedError(f"{_A_WHAT[self.kind]} is only for POST /v1/enrol")
        if self.node != node:
            raise PermissionDeniedError(
                f"the credential of node '{self.node}' may act on node '{self.node}' only, "
                f"not on '{node}'"
            )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(
    session: Session,
    kind: TokenKind,
    now: datetime,
    *,
    expires_in_s: float | None,
    node: str | None = None,
    description: str = "",
) -> tuple[str, TokenRow]:
    """A new token (its full text, shown once) and its stored row."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = TokenRow(
        id=token_id,
        kind=kind,
        secret_sha256=_digest(secret),
        node=node,
        description=description,
        created_at=now,
        expires_at=None if expires_in_s is None else now + timedelta(seconds=expires_in_s),
    )
    session.add(row)
    return f"{_LETTER[kind]}_{token_id}.{secret}", row


def parse_token(text: str) -> tuple[TokenKind, str, str]:
    """(kind, id, secret) of a token's text, or AuthenticationError."""
    prefix, _, rest = text.strip().partition("_")
    token_id, _, secret = rest.partition(".")
    if prefix not in _PREFIX or not token_id or not secret:
        raise AuthenticationError("malformed token: expected et<o|e|n>_<id>.<secret>")
    return _PREFIX[prefix], token_id, secret


def check_token(session: Session, text: str, now: datetime, *, kind: TokenKind) -> TokenRow:
    """The valid row behind a token of ``kind``; an AuthenticationError that names the
    reason (unknown, expired, revoked, already used) otherwise."""
    given_kind, token_id, secret = parse_token(text)
    row = session.get(TokenRow, token_id)
    # compare even when the row is missing, so that timing tells nothing about the ids
    stored = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(stored, _digest(secret)) or row is None:
        raise AuthenticationError(f"unknown token {token_id}")
    what = f"{_WHAT[row.kind]} {row.id}"
    if given_kind != row.kind or row.kind != kind:
        raise AuthenticationError(f"{what} cannot be used here: this call needs {_A_WHAT[kind]}")
    if row.revoked_at is not None:
        raise AuthenticationError(f"{what} was revoked at {_iso(row.revoked_at)}")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationError(f"{what} expired at {_iso(row.expires_at)}")
    if row.kind == "enrol" and row.used_at is not None:
        by = f" by node '{row.node}'" if row.node else ""
        raise AuthenticationError(f"{what} is already used{by} (at {_iso(row.used_at)})")
    return row


def authenticate(session: Session, authorization: str | None, now: datetime) -> Principal:
    """The principal behind an ``Authorization: Bearer`` header."""
    return authenticate_until(session, authorization, now)[0]


def authenticate_until(
    session: Session, authorization: str | None, now: datetime
) -> tuple[Principal, datetime | None]:
    """The principal behind an ``Authorization: Bearer`` header and when its token
    expires (None: never)."""
    if not authorization:
        raise AuthenticationError("missing credential: send Authorization: Bearer <token>")
    scheme, _, text = authorization.partition(" ")
    if scheme.lower() != "bearer" or not text.strip():
        raise AuthenticationError("the Authorization header must read: Bearer <token>")
    kind, _, _ = parse_token(text)
    if kind == "enrol":
        # an enrolment token authenticates nothing but its own enrolment
        row = check_token(session, text, now, kind="enrol")
        return Principal("enrol", row.id), row.expires_at
    row = check_token(session, text, now, kind=kind)
    return Principal(kind, row.id, row.node), row.expires_at


class PrincipalCache:
    """Principals already authenticated, by their ``Authorization`` header, so that a
    node's heartbeat does not read and hash its token on every beat.

    An entry is dropped when its token expires, after ``ttl_s``, and (all of them) by
    :meth:`clear`, which the controller calls whenever it revokes a token. On SQLite the
    controller is the only writer, so that is exact; on PostgreSQL another replica may
    revoke, and ``ttl_s`` bounds how long this one still accepts the token. Enrolment
    tokens are never cached (their use is one-time). A principal read before a
    :meth:`clear` is not stored after it (``generation``), so a revocation committed and
    then cleared is never undone by a read that raced it."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, datetime | None, datetime]] = {}
        self.generation = 0  # counts clear()
        self._lock = threading.Lock()

    def get(self, authorization: str | None, now: datetime) -> Principal | None:
        entry = self._entries.get(authorization or "")
        if entry is None:
            return None
        principal, expires_at, stored_at = entry
        fresh = stored_at <= now < stored_at + timedelta(seconds=self.ttl_s)
        if not fresh or (expires_at is not None and expires_at <= now):
            self._entries.pop(authorization or "", None)
            return None
        return principal

    def put(
        self,
        authorization: str,
        principal: Principal,
        expires_at: datetime | None,
        now: datetime,
        generation: int,
    ) -> None:
        """Keep ``principal``, read when :attr:`generation` was ``generation``."""
        if principal.kind == "enrol" or self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return  # a revocation came in between
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[authorization] = (principal, expires_at, now)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


def revoke(session: Session, token_id: str, now: datetime) -> TokenRow | None:
    row = session.get(TokenRow, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
    return row


def token_info(row: TokenRow, now: datetime) -> dict[str, object]:
    """A token as the API lists it (never the secret), with its state."""
    if row.revoked_at is not None:
        state = "revoked"
    elif row.expires_at is not None and row.expires_at <= now:
        state = "expired"
    elif row.kind == "enrol" and row.used_at is not None:
        state = "used"
    else:
        state = "valid"
    return {
        "id": row.id,
        "kind": row.kind,
        "node": row.node,
        "description": row.description,
        "state": state,
        "created_at": _iso(row.created_at),
        "expires_at": _iso(row.expires_at) if row.expires_at else None,
        "used_at": _iso(row.used_at) if row.used_at else None,
        "revoked_at": _iso(row.revoked_at) if row.revoked_at else None,
    }


def _iso(time: datetime) -> str:
    return time.isoformat(timespec="seconds")

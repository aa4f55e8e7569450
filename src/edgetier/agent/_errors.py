"""The agent's errors: what the controller answered, or that it could not be reached."""

from __future__ import annotations

from edgetier.errors import EdgeTierError

__all__ = [
    "ControllerError",
    "ControllerUnreachableError",
    "CredentialRejectedError",
    "OutboxGapError",
]


class ControllerError(EdgeTierError):
    """Raised when the controller refuses a request (a 4xx other than 401 and 409); the
    message carries its status and the ``error`` it gave."""

    http_status = 502
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ControllerUnreachableError(ControllerError):
    """Raised when the controller cannot be reached (refused, reset, timed out, 5xx): the
    agent goes on from its local store and tries again with back-off."""

    http_status = 503


class CredentialRejectedError(ControllerError):
    """Raised on a 401: an enrolment token used, expired or revoked, or a node credential
    revoked or expired. The agent cannot go on without a new token."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class OutboxGapError(ControllerError):
    """Raised on a 409 to a record batch: the controller lacks records before the batch
    (it lost them) and names the sequence it expects next."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, expected: int) -> None:
        super().__init__(message, status=409)
        self.expected = expected

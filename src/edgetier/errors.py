"""The one exception tree of EdgeTier.

Every error a user can meet derives from :class:`EdgeTierError`. Each class carries the
HTTP status and the gRPC status code it maps to, so the server maps an error once, here,
instead of in every handler. Messages name the field, the value and the limit::

    raise InvalidInputError("input 'x': shape [3, 5] has 15 elements, data has 14")
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConflictError",
    "EdgeTierError",
    "InvalidInputError",
    "MissingExtraError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PipelineError",
    "QueueFullError",
    "RequestTimeoutError",
    "ShutdownError",
    "SourceError",
    "StageError",
    "StartupError",
    "UnsupportedError",
    "UsageError",
]


class EdgeTierError(Exception):
    """Base of every error EdgeTier raises on purpose."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(EdgeTierError, ValueError):
    """Raised when a configuration file or option is invalid."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class InvalidInputError(EdgeTierError, ValueError):
    """Raised when a request is malformed: wrong datatype, shape, size or encoding."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFoundError(EdgeTierError, LookupError):
    """Raised when a named thing (model, version, region, pipeline) does not exist."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class ModelNotFoundError(NotFoundError):
    """Raised when a request names a model or version the repository does not hold."""


class ModelNotReadyError(EdgeTierError):
    """Raised when a model exists but is not loaded (unavailable, loading or unloading)."""

    http_status = 400
    grpc_code = "UNAVAILABLE"


class ModelLoadError(EdgeTierError):
    """Raised when a model cannot be loaded: corrupt file, bad config, missing provider."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class QueueFullError(EdgeTierError):
    """Raised when a request is refused at once for overload: its model's queue is at
    max_queue_size, or its estimated wait in the queue is over its budget
    (max_queue_wait_microseconds or the request's own timeout). ``retry_after_s`` says
    when the queue should have room."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimeoutError(EdgeTierError, TimeoutError):
    """Raised when a request waited in the queue longer than its timeout."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class PayloadTooLargeError(EdgeTierError):
    """Raised when a request body is larger than the server's limit."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class ShutdownError(EdgeTierError):
    """Raised when a request arrives while the server or batcher is shutting down."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class PipelineError(EdgeTierError):
    """Raised when a running pipeline meets a problem of its own (not of its config)."""


class SourceError(PipelineError):
    """Raised when a source gives up: a file that cannot be read, reconnects exhausted."""


class StageError(PipelineError):
    """Raised when a stage fails on a frame: user code returning the wrong type, a model
    whose outputs do not have the layout the stage expects."""


class StartupError(EdgeTierError, RuntimeError):
    """Raised when a server or service cannot start: a port is taken, the process exited,
    or it did not listen in time."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class UsageError(EdgeTierError, RuntimeError):
    """Raised when an API is used against its contract by the calling code (not by a
    client's request): a batcher called from another event loop, say."""


class UnsupportedError(EdgeTierError):
    """Raised when a feature is not available on this machine or for this model."""

    http_status = 400
    grpc_code = "UNIMPLEMENTED"


class MissingExtraError(EdgeTierError, ImportError):
    """Raised when an optional dependency is absent; the message gives the install command.

    ``extra`` is one of EdgeTier's extras (``video`` -> ``pip install 'edgetier[video]'``)
    or, for a plug-in of another package, its own requirement (``my-package[kafka]``).
    """

    def __init__(self, module: str, extra: str) -> None:
        requirement = extra if "[" in extra else f"edgetier[{extra}]"
        super().__init__(f"{module} is not installed; install it with: pip install '{requirement}'")
        self.module = module
        self.extra = extra


class AuthenticationError(EdgeTierError):
    """Raised when a request carries no credential, or one that is unknown, expired,
    revoked or (an enrolment token) already used; the message says which."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class PermissionDeniedError(EdgeTierError):
    """Raised when a valid credential asks for what it may not: a node credential for
    another node's state, or for an operator's call."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class ConflictError(EdgeTierError):
    """Raised when a request contradicts what is stored: a name already taken, a version
    pushed with other content, a record sequence that leaves a gap."""

    http_status = 409
    grpc_code = "ABORTED"

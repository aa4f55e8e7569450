"""Map an exception to its HTTP status and gRPC code, once, for both front ends.

EdgeTier errors carry their own status (edgetier.errors); a few library errors that mean
bad input are mapped here, and so is every allocation failure (413 / RESOURCE_EXHAUSTED:
a request too large for the memory the node has, never a 5xx); anything else is a server
fault (500 / INTERNAL) and logged.
"""

from __future__ import annotations

import logging

import grpc

from edgetier.errors import EdgeTierError

log = logging.getLogger("edgetier.server")

_GRPC: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}

DEFAULT_RETRY_AFTER_S = 1.0
"""The retry hint of a 503 whose error carries no estimate of its own (a server draining)."""


class BodyTimeoutError(EdgeTierError):
    """Raised when a client stops sending a request body for longer than the body timeout."""

    http_status = 408
    grpc_code = "DEADLINE_EXCEEDED"


def _is_onnxruntime_bad_input(exc: BaseException) -> bool:
    # onnxruntime raises its own classes (InvalidArgument, InvalidGraph...) from C++.
    kind = type(exc)
    return kind.__module__.startswith("onnxruntime") and kind.__name__ in (
        "InvalidArgument",
        "InvalidGraph",
    )


def _is_allocation_failure(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    # onnxruntime reports std::bad_alloc and its arena's failures as RuntimeException
    kind = type(exc)
    text = str(exc).lower()
    return kind.__module__.startswith("onnxruntime") and (
        "bad_alloc" in text or "failed to allocate" in text
    )


def http_status(exc: BaseException) -> int:
    """The HTTP status for an exception raised while serving a request."""
    if isinstance(exc, EdgeTierError):
        return exc.http_status
    if _is_onnxruntime_bad_input(exc):
        return 400
    if _is_allocation_failure(exc):
        return 413
    return 500


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception raised while serving a request."""
    if isinstance(exc, EdgeTierError):
        return _GRPC.get(exc.grpc_code, grpc.StatusCode.INTERNAL)
    if _is_onnxruntime_bad_input(exc):
        return grpc.StatusCode.INVALID_ARGUMENT
    if _is_allocation_failure(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INTERNAL


def message(exc: BaseException) -> str:
    """The text sent to the client; unexpected errors are logged with their traceback."""
    if isinstance(exc, EdgeTierError):
        return exc.message
    if _is_onnxruntime_bad_input(exc):
        return f"the model rejected the input: {exc}"
    if _is_allocation_failure(exc):
        log.warning("a request needed more memory than could be allocated: %r", exc)
        return "the request needs more memory than the server can allocate; send less data"
    log.error("internal error while serving a request", exc_info=exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds a refused client should wait: every 503 carries one, others None."""
    value = getattr(exc, "retry_after_s", None)
    if isinstance(value, int | float):
        return float(value)
    return DEFAULT_RETRY_AFTER_S if http_status(exc) == 503 else None

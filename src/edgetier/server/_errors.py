"""Map an exception to its HTTP status and gRPC code, once, for both front ends.

EdgeTier errors carry their own status (edgetier.errors); a few library errors that mean
bad input are mapped here; anything else is a server fault (500 / INTERNAL) and logged.
"""

from __future__ import annotations

import logging

import grpc

from edgetier.errors import EdgeTierError

log = logging.getLogger("edgetier.server")

_GRPC: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}


def _is_onnxruntime_bad_input(exc: BaseException) -> bool:
    # onnxruntime raises its own classes (InvalidArgument, InvalidGraph...) from C++.
    kind = type(exc)
    return kind.__module__.startswith("onnxruntime") and kind.__name__ in (
        "InvalidArgument",
        "InvalidGraph",
    )


def http_status(exc: BaseException) -> int:
    """The HTTP status for an exception raised while serving a request."""
    if isinstance(exc, EdgeTierError):
        return exc.http_status
    if _is_onnxruntime_bad_input(exc):
        return 400
    return 500


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception raised while serving a request."""
    if isinstance(exc, EdgeTierError):
        return _GRPC.get(exc.grpc_code, grpc.StatusCode.INTERNAL)
    if _is_onnxruntime_bad_input(exc):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def message(exc: BaseException) -> str:
    """The text sent to the client; unexpected errors are logged with their traceback."""
    if isinstance(exc, EdgeTierError):
        return exc.message
    if _is_onnxruntime_bad_input(exc):
        return f"the model rejected the input: {exc}"
    log.error("internal error while serving a request", exc_info=exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds a refused client should wait (QueueFullError), else None."""
    value = getattr(exc, "retry_after_s", None)
    return float(value) if isinstance(value, int | float) else None

"""Shared-memory registry, request checks against a model signature, error mapping."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from edgetier.errors import (
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    PayloadTooLargeError,
    QueueFullError,
)
from edgetier.server import SharedMemoryRegistry, _errors
from edgetier.server._signature import Signature


def test_registry_maps_reads_writes_and_unregisters(tmp_path: Path) -> None:
    (tmp_path / "region").write_bytes(bytes(range(64)))
    registry = SharedMemoryRegistry(tmp_path)
    registry.register("r", "/region", 16, 32)
    assert registry.status("r") == [{"name": "r", "key": "/region", "offset": 16, "byte_size": 32}]
    assert bytes(registry.read("r", 0, 4, tensor="t")) == bytes([16, 17, 18, 19])
    registry.write("r", 4, 8, b"\x01\x02", tensor="out")
    assert (tmp_path / "region").read_bytes()[20:22] == b"\x01\x02"
    with pytest.raises(InvalidInputError, match=r"'t'.*offset 30 \+ shared_memory_byte_size 4"):
        registry.read("r", 30, 4, tensor="t")
    with pytest.raises(InvalidInputError, match=r"'out': 9 bytes do not fit.*8"):
        registry.write("r", 0, 8, bytes(9), tensor="out")
    with pytest.raises(InvalidInputError, match="already registered"):
        registry.register("r", "/region", 0, 8)
    registry.unregister("r")
    registry.unregister("r")  # not an error, as Triton
    with pytest.raises(InvalidInputError, match="'r' is not registered"):
        registry.read("r", 0, 1, tensor="t")
    with pytest.raises(NotFoundError):
        registry.status("r")


def test_registry_refuses_bad_keys_and_sizes(tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(bytes(8))
    registry = SharedMemoryRegistry(tmp_path)
    with pytest.raises(InvalidInputError, match="exceeds the object's size 8"):
        registry.register("s", "small", 0, 16)
    with pytest.raises(NotFoundError, match="does not exist"):
        registry.register("s", "missing", 0, 8)
    with pytest.raises(InvalidInputError, match="not valid"):
        registry.register("s", "../etc/passwd", 0, 8)
    with pytest.raises(InvalidInputError, match="byte_size must be >= 1"):
        registry.register("s", "small", 0, 0)
    registry.close()


def _signature() -> Signature:
    return Signature(
        "m",
        [("a", "FP32", [-1, 4]), ("b", "INT64", [-1, -1])],
        [("y", "FP32", [-1, 4])],
        max_batch_size=8,
    )


def test_signature_checks_name_the_tensor_and_the_limit() -> None:
    sig = _signature()
    assert sig.check_input("a", "FP32", [2, 4]).dtype == np.float32
    cases = [
        (("c", "FP32", [1, 4]), r"no input 'c'; its inputs are: a, b"),
        (("a", "FP16", [1, 4]), r"'a': datatype 'FP16' does not match the model's FP32"),
        (("a", "FP32", [1, 4, 1]), r"'a': shape \[1, 4, 1\] has 3 dims, the model expects 2"),
        (("a", "FP32", [1, 5]), r"'a': dim 1 .* is 5, the model expects 4"),
        (("a", "FP32", [9, 4]), r"'a': batch size 9 exceeds max_batch_size 8"),
        (("a", "FP32", [0, 4]), r"batch size must be >= 1, got 0"),
        (("a", "FP32", [1, -4]), r"integers >= 0"),
        (("a", "FP32", "x"), r"integers >= 0"),
    ]
    for args, pattern in cases:
        with pytest.raises(InvalidInputError, match=pattern):
            sig.check_input(*args)
    with pytest.raises(InvalidInputError, match="missing: b"):
        sig.check_complete({"a": np.zeros((1, 4), np.float32)})
    with pytest.raises(InvalidInputError, match="a=1, b=2"):
        sig.check_complete({"a": np.zeros((1, 4)), "b": np.zeros((2, 3))})
    with pytest.raises(InvalidInputError, match="no output 'z'; its outputs are: y"):
        sig.check_output("z")


def test_error_mapping_is_one_table() -> None:
    assert _errors.http_status(InvalidInputError("x")) == 400
    assert _errors.grpc_code(InvalidInputError("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert _errors.http_status(ModelNotFoundError("x")) == 404
    assert _errors.grpc_code(ModelNotFoundError("x")) == grpc.StatusCode.NOT_FOUND
    assert _errors.http_status(PayloadTooLargeError("x")) == 413
    full = QueueFullError("full", retry_after_s=0.2)
    assert _errors.http_status(full) == 503
    assert _errors.grpc_code(full) == grpc.StatusCode.UNAVAILABLE
    assert _errors.retry_after_s(full) == 0.2
    assert _errors.retry_after_s(InvalidInputError("x")) is None
    assert _errors.http_status(RuntimeError("bug")) == 500
    assert _errors.grpc_code(RuntimeError("bug")) == grpc.StatusCode.INTERNAL

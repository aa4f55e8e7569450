"""Tensor codecs: raw, BYTES and JSON, with the errors that name the tensor and the limit."""

from __future__ import annotations

import numpy as np
import pytest

from edgetier.errors import InvalidInputError
from edgetier.runtime import DATATYPES, to_numpy_dtype
from edgetier.server._codec import (
    deserialize_bytes,
    from_json,
    from_raw,
    raw_size,
    serialize_bytes,
    to_json,
    to_raw,
)


def test_bytes_round_trip_matches_tritonclient() -> None:
    from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

    data = np.array([b"", b"abc", "é".encode(), b"\x00\xff"], dtype=object)
    wire = serialize_bytes(data)
    assert wire == serialize_byte_tensor(data).item()
    back = deserialize_bytes(wire, 4, name="t")
    assert list(back) == list(deserialize_bytes_tensor(wire))


def test_bytes_errors_name_the_tensor() -> None:
    wire = serialize_bytes(np.array([b"ab", b"cd"], dtype=object))
    with pytest.raises(InvalidInputError, match=r"'t'.*2 BYTES elements, the shape needs 3"):
        deserialize_bytes(wire, 3, name="t")
    with pytest.raises(InvalidInputError, match=r"'t'.*declares 2 bytes, only 1"):
        deserialize_bytes(wire[:-1], 2, name="t")
    with pytest.raises(InvalidInputError, match=r"'t'.*6 bytes after the 1 BYTES"):
        deserialize_bytes(wire, 1, name="t")


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_raw_round_trip_is_zero_copy(datatype: str) -> None:
    dtype = to_numpy_dtype(datatype)
    array = np.arange(6).astype(dtype).reshape(2, 3)
    wire = bytes(to_raw(array, datatype))
    back = from_raw(wire, datatype, [2, 3], name="x")
    np.testing.assert_array_equal(back, array)
    assert not back.flags.owndata  # a view of the received bytes
    assert raw_size(array, datatype) == len(wire)


def test_raw_size_mismatch_names_sizes() -> None:
    with pytest.raises(InvalidInputError, match=r"'x'.*has 8 bytes.*\[3\] of FP32 needs 12"):
        from_raw(bytes(8), "FP32", [3], name="x")


def test_json_decoding_checks_counts_kinds_and_ranges() -> None:
    np.testing.assert_array_equal(
        from_json([[1, 2], [3, 4]], "INT8", [2, 2], name="x"), np.array([[1, 2], [3, 4]], np.int8)
    )
    assert from_json([2**64 - 1, 1], "UINT64", [2], name="x")[0] == 2**64 - 1
    assert from_json(["a", "é"], "BYTES", [2], name="x").tolist() == [b"a", "é".encode()]
    assert from_json([True, False], "BOOL", [2], name="x").dtype == np.bool_
    assert from_json([1, 2.5], "FP16", [2], name="x").dtype == np.float16
    with pytest.raises(InvalidInputError, match=r"'x': data has 3 elements, shape \[4\] needs 4"):
        from_json([1, 2, 3], "INT32", [4], name="x")
    with pytest.raises(InvalidInputError, match="out of range for UINT8"):
        from_json([300], "UINT8", [1], name="x")
    with pytest.raises(InvalidInputError, match="INT32 data must be integers"):
        from_json([1.5], "INT32", [1], name="x")
    with pytest.raises(InvalidInputError, match="BYTES data must be strings"):
        from_json([1], "BYTES", [1], name="x")
    with pytest.raises(InvalidInputError, match="irregular"):
        from_json([[1, 2], [3]], "INT32", [3], name="x")


def test_json_encoding() -> None:
    assert to_json(np.array([b"a", "b"], dtype=object), "BYTES") == ["a", "b"]
    with pytest.raises(InvalidInputError, match="binary_data=true"):
        to_json(np.array([b"\xff"], dtype=object), "BYTES")
    assert to_json(np.ones((2, 2), np.float32), "FP32").shape == (4,)

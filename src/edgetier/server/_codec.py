"""Tensor codecs of the KServe v2 protocol: JSON data, raw (binary) data and BYTES.

Raw fixed-size tensors are read with ``np.frombuffer`` on the received bytes (no copy).
BYTES tensors are serialized as Triton does: each element is a 4-byte little-endian
length followed by that many bytes. BYTES tensors are numpy object arrays of ``bytes``
(the runtime's convention); ``str`` elements are encoded as UTF-8 on the way out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetier.errors import InvalidInputError
from edgetier.runtime import element_size, to_numpy_dtype

if TYPE_CHECKING:
    from edgetier.server._shm import SharedMemoryRegistry

_LEN = struct.Struct("<I")
_JSON_KINDS: dict[str, str] = {"BOOL": "b", "BYTES": "U"}
_INT_KINDS = "iu"
_FLOAT_KINDS = "iuf"


def element_count(shape: Sequence[int]) -> int:
    """The number of elements of a shape (Python ints: no overflow on huge shapes)."""
    count = 1
    for dim in shape:
        count *= dim
    return count


def byte_size(datatype: str, shape: Sequence[int]) -> int:
    """Bytes of a fixed-size tensor; raises for BYTES, whose size depends on the data."""
    return element_size(datatype) * element_count(shape)


# ---------------------------------------------------------------------------- BYTES


def serialize_bytes(array: np.ndarray) -> bytes:
    """Triton's BYTES wire format: 4-byte little-endian length, then the bytes, per element."""
    parts: list[bytes] = []
    pack = _LEN.pack
    for item in array.reshape(-1).tolist():
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, bytes):
            item = str(item).encode("utf-8")
        parts.append(pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def deserialize_bytes(
    buffer: bytes | memoryview, count: int, *, name: str, where: str = "data"
) -> np.ndarray:
    """Parse ``count`` length-prefixed elements; every byte of ``buffer`` must be used.

    Returns a flat object array of ``bytes``.
    """
    view = memoryview(buffer)
    _check_bytes_room(count, len(view), name=name, where=where)
    return _parse_bytes(view, count, name=name, where=where)


def _check_bytes_room(count: int, nbytes: int, *, name: str, where: str) -> None:
    """Raise unless ``nbytes`` holds ``count`` length prefixes at least: checked before
    anything is allocated for the elements."""
    if count > nbytes // 4:
        raise InvalidInputError(
            f"input {name!r}: the shape needs {count} BYTES elements, at least {4 * count} "
            f"bytes (a 4-byte length each), but {where} holds {nbytes}"
        )


def _parse_bytes(view: memoryview, count: int, *, name: str, where: str) -> np.ndarray:
    size = len(view)
    out = np.empty(count, dtype=object)
    pos = 0
    unpack = _LEN.unpack_from
    for i in range(count):
        if pos + 4 > size:
            raise InvalidInputError(
                f"input {name!r}: {where} holds {i} BYTES elements, the shape needs {count} "
                f"(each element is a 4-byte length and its bytes)"
            )
        (length,) = unpack(view, pos)
        pos += 4
        if pos + length > size:
            raise InvalidInputError(
                f"input {name!r}: BYTES element {i} declares {length} bytes, "
                f"only {size - pos} are left in the {where}"
            )
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != size:
        raise InvalidInputError(
            f"input {name!r}: {where} has {size - pos} bytes after the {count} BYTES elements "
            f"the shape needs"
        )
    return out


# ------------------------------------------------------------------------------ raw


def _check_carried(
    nbytes: int, datatype: str, shape: Sequence[int], *, name: str, where: str = "binary data"
) -> int:
    """Raise unless ``nbytes`` can hold the tensor the shape claims (exactly, for fixed-size
    types; at least the length prefixes, for BYTES): checked before reading or allocating.
    Returns the shape's element count."""
    count = element_count(shape)
    if datatype == "BYTES":
        _check_bytes_room(count, nbytes, name=name, where=where)
        return count
    expected = count * to_numpy_dtype(datatype).itemsize
    if nbytes != expected:
        raise InvalidInputError(
            f"input {name!r}: {where} has {nbytes} bytes, shape {list(shape)} of {datatype} "
            f"needs {expected}"
        )
    return count


def from_raw(
    buffer: bytes | memoryview,
    datatype: str,
    shape: Sequence[int],
    *,
    name: str,
    where: str = "binary data",
) -> np.ndarray:
    """A tensor from raw bytes: zero-copy for fixed-size types; sizes must agree exactly."""
    nbytes = len(buffer) if isinstance(buffer, bytes) else memoryview(buffer).nbytes
    count = _check_carried(nbytes, datatype, shape, name=name, where=where)
    return _tensor(buffer, datatype, shape, count, name=name, where=where)


def from_shm(
    shm: SharedMemoryRegistry,
    region: str,
    offset: int,
    byte_size: int,
    datatype: str,
    shape: Sequence[int],
    *,
    name: str,
    where: str,
) -> np.ndarray:
    """An input in a shared-memory region: ``byte_size`` is checked against the shape
    before the region is read (into a copy: see edgetier.server._shm)."""
    count = _check_carried(byte_size, datatype, shape, name=name, where=where)
    data = shm.read(region, offset, byte_size, tensor=name)
    return _tensor(data, datatype, shape, count, name=name, where=where)


def _tensor(
    buffer: bytes | memoryview,
    datatype: str,
    shape: Sequence[int],
    count: int,
    *,
    name: str,
    where: str,
) -> np.ndarray:
    """The tensor of ``count`` elements in ``buffer``, whose size _check_carried passed."""
    if datatype == "BYTES":
        return _parse_bytes(memoryview(buffer), count, name=name, where=where).reshape(shape)
    return np.frombuffer(buffer, dtype=to_numpy_dtype(datatype), count=count).reshape(shape)


def to_raw(array: np.ndarray, datatype: str) -> bytes | memoryview:
    """The wire bytes of a tensor: a view of the array when it is contiguous."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return memoryview(array).cast("B")  # type: ignore[arg-type]


def raw_size(array: np.ndarray, datatype: str) -> int:
    """Bytes the tensor takes on the wire (for BYTES: with the length prefixes)."""
    if datatype == "BYTES":
        return sum(
            4 + len(x.encode("utf-8") if isinstance(x, str) else x)
            for x in array.reshape(-1).tolist()
        )
    return int(array.nbytes)


# ----------------------------------------------------------------------------- JSON


def from_json(data: Any, datatype: str, shape: Sequence[int], *, name: str) -> np.ndarray:
    """A tensor from the JSON ``data`` field: a flat or nested list in row-major order."""
    count = element_count(shape)
    if not isinstance(data, list):
        data = [data]
    try:
        array = np.array(data)
    except (ValueError, TypeError):
        raise InvalidInputError(
            f"input {name!r}: data is not a list of {datatype} values (irregular nesting?)"
        ) from None
    if array.size != count:
        raise InvalidInputError(
            f"input {name!r}: data has {array.size} elements, shape {list(shape)} needs {count}"
        )
    if count == 0:
        return np.empty(shape, dtype=to_numpy_dtype(datatype))
    kind = array.dtype.kind
    if datatype == "BYTES":
        if kind != "U":
            raise InvalidInputError(
                f"input {name!r}: BYTES data must be strings, got {kind_name(kind)}"
            )
        out = np.empty(count, dtype=object)
        out[:] = [item.encode("utf-8") for item in array.reshape(-1).tolist()]
        return out.reshape(shape)
    allowed = _JSON_KINDS.get(datatype) or (
        _FLOAT_KINDS if datatype.startswith("FP") else _INT_KINDS
    )
    if kind == "f" and datatype in ("INT64", "UINT64"):
        # numpy infers float64 for integers beyond int64 mixed with others: be exact.
        values = array.reshape(-1).tolist() if array.dtype != object else []
        raw = np.array(data, dtype=object).reshape(-1).tolist()
        if values and all(type(v) is int for v in raw):
            try:
                return np.array(raw, dtype=to_numpy_dtype(datatype)).reshape(shape)
            except OverflowError:
                raise InvalidInputError(
                    f"input {name!r}: a value is out of range for {datatype}"
                ) from None
    if kind not in allowed:
        raise InvalidInputError(
            f"input {name!r}: {datatype} data must be {_kinds_text(datatype)}, "
            f"got {kind_name(kind)}"
        )
    dtype = to_numpy_dtype(datatype)
    if kind in "iu" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise InvalidInputError(
                f"input {name!r}: value {low if low < info.min else high} is out of range "
                f"for {datatype} [{info.min}, {info.max}]"
            )
    return array.astype(dtype, copy=False).reshape(shape)


def to_json(array: np.ndarray, datatype: str) -> Any:
    """The JSON ``data`` of an output: flat, in row-major order.

    Fixed-size types stay numpy arrays (orjson serializes them natively); BYTES become
    strings, and must be UTF-8.
    """
    if datatype == "BYTES":
        out: list[str] = []
        for item in array.reshape(-1).tolist():
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInputError(
                        "a BYTES output is not UTF-8 and cannot be sent as JSON; "
                        "request it with binary_data=true"
                    ) from None
            out.append(str(item))
        return out
    flat = array.reshape(-1)
    if not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat)
    return flat


def kind_name(kind: str) -> str:
    """Words for a numpy dtype kind, for error messages."""
    return {
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "numbers with a fraction",
        "U": "strings",
        "O": "mixed values",
    }.get(kind, "values of another type")


def _kinds_text(datatype: str) -> str:
    if datatype == "BOOL":
        return "true/false"
    if datatype.startswith("FP"):
        return "numbers"
    return "integers"

"""Tensor datatypes: KServe v2 names, Triton config names, numpy and ONNX, in one table.

Usage::

    >>> to_numpy_dtype("FP32")
    dtype('float32')
    >>> datatype_of(np.dtype("int64"))
    'INT64'
"""

from __future__ import annotations

import numpy as np

from edgetier.errors import InvalidInputError

# KServe v2 datatype -> (numpy dtype, ONNX TensorProto elem type, bytes per element or 0)
_TABLE: dict[str, tuple[np.dtype, int, int]] = {
    "BOOL": (np.dtype(np.bool_), 9, 1),
    "UINT8": (np.dtype(np.uint8), 2, 1),
    "UINT16": (np.dtype(np.uint16), 4, 2),
    "UINT32": (np.dtype(np.uint32), 12, 4),
    "UINT64": (np.dtype(np.uint64), 13, 8),
    "INT8": (np.dtype(np.int8), 3, 1),
    "INT16": (np.dtype(np.int16), 5, 2),
    "INT32": (np.dtype(np.int32), 6, 4),
    "INT64": (np.dtype(np.int64), 7, 8),
    "FP16": (np.dtype(np.float16), 10, 2),
    "FP32": (np.dtype(np.float32), 1, 4),
    "FP64": (np.dtype(np.float64), 11, 8),
    "BYTES": (np.dtype(np.object_), 8, 0),
}

DATATYPES: tuple[str, ...] = tuple(_TABLE)
"""Every KServe v2 datatype EdgeTier supports (all that ONNX has)."""

_BY_NUMPY = {dt.str: name for name, (dt, _, _) in _TABLE.items() if name != "BYTES"}
_BY_ONNX = {onnx_type: name for name, (_, onnx_type, _) in _TABLE.items()}


def to_numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype for a KServe v2 datatype ("FP32") or a Triton one ("TYPE_FP32")."""
    name = datatype.removeprefix("TYPE_")
    if name == "STRING":
        name = "BYTES"
    try:
        return _TABLE[name][0]
    except KeyError:
        raise InvalidInputError(
            f"datatype {datatype!r} is not supported; allowed: {', '.join(DATATYPES)}"
        ) from None


def datatype_of(dtype: np.dtype) -> str:
    """The KServe v2 datatype of a numpy dtype; object and bytes/str arrays are BYTES."""
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_NUMPY[dtype.newbyteorder("=").str if dtype.byteorder == ">" else dtype.str]
    except KeyError:
        raise InvalidInputError(f"numpy dtype {dtype} has no KServe v2 datatype") from None


def datatype_of_onnx(elem_type: int) -> str:
    """The KServe v2 datatype of an ONNX TensorProto element type."""
    try:
        return _BY_ONNX[elem_type]
    except KeyError:
        raise InvalidInputError(f"ONNX element type {elem_type} is not supported") from None


def onnx_elem_type(datatype: str) -> int:
    """The ONNX TensorProto element type of a KServe v2 datatype."""
    return _TABLE[datatype.removeprefix("TYPE_")][1]


def element_size(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype; 0 for BYTES (variable length)."""
    return _TABLE[datatype.removeprefix("TYPE_")][2]


def triton_name(datatype: str) -> str:
    """The Triton model-config name of a datatype: FP32 -> TYPE_FP32, BYTES -> TYPE_STRING."""
    name = datatype.removeprefix("TYPE_")
    return "TYPE_STRING" if name == "BYTES" else f"TYPE_{name}"

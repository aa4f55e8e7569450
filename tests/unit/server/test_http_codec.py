"""HTTP infer bodies: header length, binary sections, response layout; metrics text."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from edgetier.errors import InvalidInputError
from edgetier.server import SharedMemoryRegistry
from edgetier.server._core import InferRequest, OutputTensor, RequestedOutput
from edgetier.server._http_codec import decode_request, encode_response, parse_header_length
from edgetier.server._signature import Signature


def _version() -> SimpleNamespace:
    signature = Signature(
        "m",
        [("a", "FP32", [-1, 2]), ("s", "BYTES", [-1])],
        [("y", "FP32", [-1, 2]), ("t", "BYTES", [-1])],
        max_batch_size=4,
    )
    return SimpleNamespace(name="m", version_str="1", signature=signature)


def _body(binary: bool) -> tuple[bytes, int | None]:
    a = np.array([[1, 2]], np.float32)
    strings = (4).to_bytes(4, "little") + b"word"
    inputs = [
        {
            "name": "a",
            "datatype": "FP32",
            "shape": [1, 2],
            **({"parameters": {"binary_data_size": 8}} if binary else {"data": [1, 2]}),
        },
        {
            "name": "s",
            "datatype": "BYTES",
            "shape": [1],
            **(
                {"parameters": {"binary_data_size": len(strings)}} if binary else {"data": ["word"]}
            ),
        },
    ]
    header = json.dumps(
        {
            "id": "7",
            "inputs": inputs,
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "t"}],
        }
    ).encode()
    if not binary:
        return header, None
    return header + a.tobytes() + strings, len(header)


@pytest.mark.parametrize("binary", [True, False])
def test_decode_json_and_binary(binary: bool) -> None:
    body, length = _body(binary)
    request = decode_request(body, length, _version(), SharedMemoryRegistry())  # type: ignore[arg-type]
    np.testing.assert_array_equal(request.inputs["a"], [[1, 2]])
    assert request.inputs["s"].tolist() == [b"word"]
    assert request.id == "7"
    assert [o.name for o in request.outputs or []] == ["y", "t"]
    assert request.outputs and request.outputs[0].binary is True


def test_extra_bytes_after_binary_inputs_are_refused() -> None:
    body, length = _body(True)
    with pytest.raises(InvalidInputError, match="3 bytes after the binary data"):
        decode_request(body + b"xyz", length, _version(), SharedMemoryRegistry())  # type: ignore[arg-type]


def test_header_length_checks() -> None:
    assert parse_header_length(b"10", 20) == 10
    with pytest.raises(InvalidInputError, match="is 30, the body has 20 bytes"):
        parse_header_length(b"30", 20)
    with pytest.raises(InvalidInputError, match="must be an integer"):
        parse_header_length(b"ten", 20)


def test_encode_mixes_binary_and_json_outputs() -> None:
    version = _version()
    y = np.array([[1.5, 2.5]], np.float32)
    t = np.array([b"hi"], dtype=object)
    request = InferRequest("9", {}, [RequestedOutput("y", True), RequestedOutput("t", False)])
    outputs = [
        OutputTensor(version.signature.outputs["y"], y, request.outputs[0]),  # type: ignore[index]
        OutputTensor(version.signature.outputs["t"], t, request.outputs[1]),
    ]  # type: ignore[index]
    body, length = encode_response(version, request, outputs)  # type: ignore[arg-type]
    assert length is not None
    header = json.loads(body[:length])
    assert header["id"] == "9" and header["model_version"] == "1"
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1]["data"] == ["hi"]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32), [1.5, 2.5])

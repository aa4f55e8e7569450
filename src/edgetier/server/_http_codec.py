"""KServe v2 HTTP infer bodies: JSON tensors and the binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes; the header's
length is in ``Inference-Header-Content-Length`` and each binary input says its size in
``parameters.binary_data_size``. Responses use the same layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from edgetier.errors import InvalidInputError
from edgetier.server._codec import from_json, from_raw, from_shm, to_json, to_raw
from edgetier.server._core import InferRequest, OutputTensor, RequestedOutput, int_param
from edgetier.server._manager import ModelVersion
from edgetier.server._shm import SharedMemoryRegistry

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def parse_header_length(value: bytes | None, body_size: int) -> int | None:
    """The ``Inference-Header-Content-Length`` header, checked against the body size."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise InvalidInputError(
            f"header Inference-Header-Content-Length must be an integer, got {value[:32]!r}"
        ) from None
    if length < 0 or length > body_size:
        raise InvalidInputError(
            f"header Inference-Header-Content-Length is {length}, the body has {body_size} bytes"
        )
    return length


def loads(data: bytes | memoryview, what: str = "request body") -> Any:
    """orjson.loads with a 400 that says where the JSON breaks."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None


def _obj(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{field} must be a JSON object, got {type(value).__name__}")
    return value


def _shm_ref(
    params: dict[str, Any], tensor: str, shm: SharedMemoryRegistry
) -> tuple[str, int, int]:
    region = params.get("shared_memory_region")
    if not isinstance(region, str):
        raise InvalidInputError(
            f"tensor {tensor!r}: parameter 'shared_memory_region' must be a string"
        )
    size = params.get("shared_memory_byte_size")
    if size is None:
        raise InvalidInputError(
            f"tensor {tensor!r}: parameter 'shared_memory_byte_size' is required with "
            f"'shared_memory_region'"
        )
    size = int_param(size, "shared_memory_byte_size")
    offset = int_param(params.get("shared_memory_offset", 0), "shared_memory_offset")
    shm.check(region, offset, size, tensor=tensor)  # region registered and large enough
    return region, offset, size


def decode_request(
    body: bytes,
    header_length: int | None,
    version: ModelVersion,
    shm: SharedMemoryRegistry,
) -> InferRequest:
    """Decode and check an HTTP infer body for ``version``."""
    view = memoryview(body)
    header = loads(view[:header_length] if header_length is not None else view)
    header = _obj(header, "the request body")
    signature = version.signature
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("field 'inputs' must be a non-empty list of tensors")
    cursor = header_length if header_length is not None else len(body)
    end = len(body)
    inputs: dict[str, np.ndarray] = {}
    for index, item in enumerate(raw_inputs):
        tensor = _obj(item, f"inputs[{index}]")
        name = tensor.get("name")
        entry = signature.check_input(name, tensor.get("datatype"), tensor.get("shape"))
        if name in inputs:
            raise InvalidInputError(f"input {name!r} appears more than once")
        shape = tensor["shape"]
        params = tensor.get("parameters")
        params = _obj(params, f"inputs[{index}].parameters") if params is not None else {}
        if "shared_memory_region" in params:
            region, offset, size = _shm_ref(params, entry.name, shm)
            inputs[entry.name] = from_shm(
                shm,
                region,
                offset,
                size,
                entry.datatype,
                shape,
                name=entry.name,
                where=f"shared memory region {region!r} (shared_memory_byte_size {size})",
            )
        elif "binary_data_size" in params:
            size = int_param(params["binary_data_size"], "binary_data_size")
            if header_length is None:
                raise InvalidInputError(
                    f"input {entry.name!r} has binary_data_size but the request has no "
                    f"Inference-Header-Content-Length header"
                )
            if cursor + size > end:
                raise InvalidInputError(
                    f"input {entry.name!r}: binary_data_size {size} exceeds the {end - cursor} "
                    f"bytes left in the body (truncated?)"
                )
            inputs[entry.name] = from_raw(
                view[cursor : cursor + size], entry.datatype, shape, name=entry.name
            )
            cursor += size
        elif "data" in tensor:
            inputs[entry.name] = from_json(tensor["data"], entry.datatype, shape, name=entry.name)
        else:
            raise InvalidInputError(
                f"input {entry.name!r} has no 'data', binary_data_size or shared_memory_region"
            )
    if header_length is not None and cursor != end:
        raise InvalidInputError(
            f"the body has {end - cursor} bytes after the binary data the inputs declare"
        )
    signature.check_complete(inputs)

    params = header.get("parameters")
    params = _obj(params, "parameters") if params is not None else {}
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInputError(
            f"parameter 'binary_data_output' must be true or false, got {binary_output!r}"
        )
    outputs: list[RequestedOutput] | None = None
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInputError("field 'outputs' must be a list")
        outputs = []
        for index, item in enumerate(raw_outputs):
            out = _obj(item, f"outputs[{index}]")
            entry = signature.check_output(out.get("name"))
            if any(o.name == entry.name for o in outputs):
                raise InvalidInputError(f"output {entry.name!r} is requested more than once")
            oparams = out.get("parameters")
            oparams = _obj(oparams, f"outputs[{index}].parameters") if oparams is not None else {}
            if oparams.get("classification"):
                raise InvalidInputError(
                    f"output {entry.name!r}: the classification extension is not supported"
                )
            binary = oparams.get("binary_data", binary_output)
            if not isinstance(binary, bool):
                raise InvalidInputError(
                    f"output {entry.name!r}: parameter 'binary_data' must be true or false"
                )
            ref = _shm_ref(oparams, entry.name, shm) if "shared_memory_region" in oparams else None
            outputs.append(RequestedOutput(entry.name, binary, ref))
    request_id = header.get("id", "")
    return InferRequest(
        id=request_id if isinstance(request_id, str) else str(request_id),
        inputs=inputs,
        outputs=outputs,
        priority=int_param(params.get("priority", 0), "priority"),
        timeout_us=int_param(params.get("timeout", 0), "timeout"),
        binary_output=binary_output,
    )


def encode_response(
    version: ModelVersion, request: InferRequest, outputs: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body and, when binary tensors follow the JSON, its header length."""
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for out in outputs:
        entry, array = out.entry, out.array
        item: dict[str, Any] = {
            "name": entry.name,
            "datatype": entry.datatype,
            "shape": list(array.shape),
        }
        wanted = out.request
        if out.shm_size >= 0 and wanted is not None and wanted.shm is not None:
            region, offset, _ = wanted.shm
            item["parameters"] = {
                "shared_memory_region": region,
                "shared_memory_byte_size": out.shm_size,
                **({"shared_memory_offset": offset} if offset else {}),
            }
        elif (
            wanted.binary
            if wanted is not None and wanted.binary is not None
            else request.binary_output
        ):
            raw = to_raw(array, entry.datatype)
            item["parameters"] = {"binary_data_size": memoryview(raw).nbytes}
            blobs.append(raw)
        else:
            item["data"] = to_json(array, entry.datatype)
        tensors.append(item)
    body: dict[str, Any] = {
        "model_name": version.name,
        "model_version": version.version_str,
        "outputs": tensors,
    }
    if request.id:
        body["id"] = request.id
    header = orjson.dumps(body, option=_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)

"""Serve one ONNX model with Ray Serve, batched with @serve.batch, over KServe v2 HTTP.

Ray Serve has no KServe endpoint of its own; this deployment speaks the part of KServe v2
HTTP that the benchmark client uses (health, model metadata, infer with JSON tensors and
the binary tensor data extension), so every system is driven by the same client.
"""

# mypy: ignore-errors
# (run by the peer interpreter against untyped peer libraries; not part of the typed API)
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import ray
from _common import ORT_TO_NUMPY, parser, session, wait_for_signal
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_NP = {
    name: np.dtype(t)
    for name, t in {
        "FP32": np.float32,
        "FP16": np.float16,
        "FP64": np.float64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "BOOL": np.bool_,
    }.items()
}
_DT = {dtype.str: name for name, dtype in _NP.items()}


def _decode(body: bytes, header_len: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    header = json.loads(body[:header_len] if header_len else body)
    offset = header_len or 0
    arrays = {}
    for t in header["inputs"]:
        dtype, shape = _NP[t["datatype"]], t["shape"]
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arrays[t["name"]] = np.frombuffer(body[offset : offset + size], dtype).reshape(shape)
            offset += size
        else:
            arrays[t["name"]] = np.asarray(t["data"], dtype=dtype).reshape(shape)
    return header, arrays


def _encode(name: str, header: dict, outputs: dict[str, np.ndarray]) -> Response:
    params = header.get("parameters") or {}
    wanted = {o["name"]: (o.get("parameters") or {}) for o in header.get("outputs") or []}
    binary_all = bool(params.get("binary_data_output"))
    meta, blobs = [], []
    for key, arr in outputs.items():
        if wanted and key not in wanted:
            continue
        entry = {"name": key, "datatype": _DT[arr.dtype.str], "shape": list(arr.shape)}
        if wanted.get(key, {}).get("binary_data", binary_all):
            data = np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            entry["data"] = arr.ravel().tolist()
        meta.append(entry)
    body = json.dumps({"model_name": name, "model_version": "1", "outputs": meta}).encode()
    if not blobs:
        return Response(body, media_type="application/json")
    return Response(
        body + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(body))},
    )


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    args_max_requests = max(1, args.max_batch_size) if args.dynamic_batching else 1

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
    class OnnxModel:
        def __init__(self) -> None:
            self.sess = session(args)
            self.out_names = [o.name for o in self.sess.get_outputs()]
            self.meta = {
                "name": args.name,
                "versions": ["1"],
                "platform": "onnxruntime_onnx",
                "inputs": [self._spec(t) for t in self.sess.get_inputs()],
                "outputs": [self._spec(t) for t in self.sess.get_outputs()],
            }

        @staticmethod
        def _spec(t: object) -> dict:
            dt = _DT[np.dtype(ORT_TO_NUMPY[t.type]).str]  # type: ignore[attr-defined]
            shape = [d if isinstance(d, int) else -1 for d in t.shape]  # type: ignore[attr-defined]
            return {"name": t.name, "datatype": dt, "shape": shape}  # type: ignore[attr-defined]

        @serve.batch(
            max_batch_size=args_max_requests,
            batch_wait_timeout_s=args.max_queue_delay_us / 1e6,
        )
        async def run(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
            names = list(requests[0])
            rows = [len(r[names[0]]) for r in requests]
            merged = {n: np.concatenate([r[n] for r in requests]) for n in names}
            results = self.sess.run(self.out_names, merged)
            out, start = [], 0
            for count in rows:
                out.append(
                    {
                        n: v[start : start + count]
                        for n, v in zip(self.out_names, results, strict=True)
                    }
                )
                start += count
            return out

        async def __call__(self, request: Request) -> Response:
            path = request.url.path.rstrip("/")
            if request.method == "GET":
                if path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{args.name}/ready"):
                    return Response(b"")
                if path == f"/v2/models/{args.name}":
                    return JSONResponse(self.meta)
                return JSONResponse({"error": f"unknown path {path}"}, status_code=404)
            if path != f"/v2/models/{args.name}/infer":
                return JSONResponse({"error": f"unknown path {path}"}, status_code=404)
            body = await request.body()
            header_len = request.headers.get("inference-header-content-length")
            header, arrays = _decode(body, int(header_len) if header_len else None)
            outputs = await self.run(arrays)
            return _encode(args.name, header, outputs)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": args.host, "port": args.http_port})
    serve.run(OnnxModel.bind(), name=args.name, route_prefix="/")
    print("READY", flush=True)
    try:
        wait_for_signal()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()

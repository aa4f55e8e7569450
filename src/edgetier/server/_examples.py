"""What ``edgetier serve --print-examples`` prints: a curl, a tritonclient snippet, a load test.

Each targets the demo repository (the ``simple`` add/sub model and ``resnet50``) and runs
as printed.
"""

from __future__ import annotations

import os
import shutil
import sys


def _command() -> str:
    """How to call this very `edgetier`: its name when on PATH, else its path (.venv/bin)."""
    me = sys.argv[0]
    on_path = shutil.which("edgetier")
    if os.path.basename(me) == "edgetier" and (
        on_path is None or os.path.realpath(on_path) != os.path.realpath(me)
    ):
        return me
    return "edgetier"


def examples(host: str, http_port: int, grpc_port: int, metrics_port: int | None) -> str:
    """The text printed once the server is ready."""
    data = ", ".join(str(i) for i in range(16))
    curl = (
        f"curl -s -X POST http://{host}:{http_port}/v2/models/simple/infer "
        f"-H 'Content-Type: application/json' "
        f'-d \'{{"inputs": ['
        f'{{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [{data}]}}, '
        f'{{"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [{data}]}}'
        f"]}}'"
    )
    python = f"""import numpy as np
import tritonclient.grpc as grpcclient

client = grpcclient.InferenceServerClient("{host}:{grpc_port}")
a = np.arange(16, dtype=np.int32).reshape(1, 16)
b = np.ones((1, 16), dtype=np.int32)
inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
          grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
inputs[0].set_data_from_numpy(a)
inputs[1].set_data_from_numpy(b)
result = client.infer("simple", inputs)
print("sum:", result.as_numpy("OUTPUT0"))
print("difference:", result.as_numpy("OUTPUT1"))"""
    sweep = "--model resnet50 --concurrency 1,2,4,8"
    bench = f"{_command()} bench server grpc://{host}:{grpc_port} {sweep}"
    lines = [
        "EdgeTier is ready.",
        "",
        "# HTTP (KServe v2 JSON), the demo model 'simple' (sum and difference of two vectors):",
        curl,
        "",
        "# Python, tritonclient over gRPC (pip install 'tritonclient[grpc]'):",
        python,
        "",
        "# Load test over gRPC:",
        bench,
    ]
    if metrics_port is not None:
        lines += ["", "# Prometheus metrics:", f"curl -s http://{host}:{metrics_port}/metrics"]
    return "\n".join(lines)

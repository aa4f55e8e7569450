"""The engine of docs/extending.md (examples/extending/linear_engine.py): registered in one
call, its model auto-completed from the file, served over HTTP and gRPC with tritonclient."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from edgetier.testing import running_server

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples" / "extending"


def test_a_registered_engine_serves_over_both_protocols(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgetier.runtime import _registry

    # the registration lasts for this test only: other tests see the built-in engines
    monkeypatch.setattr(_registry, "_ENGINES", dict(_registry._ENGINES))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    linear_engine = importlib.reload(importlib.import_module("linear_engine"))  # registers

    assert linear_engine.LinearEngine.platform == "numpy_npz"
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = np.array([1, 2, 3], np.float32)
    version = tmp_path / "repo" / "linear" / "1"
    version.mkdir(parents=True)
    np.savez(version / "model.npz", w=w, b=b)  # no config.yaml: the file says it all
    x = np.ones((2, 4), np.float32)
    with running_server(tmp_path / "repo") as server:
        http = httpclient.InferenceServerClient(server.http_url)
        meta = http.get_model_metadata("linear")
        assert meta["platform"] == "numpy_npz"
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        request = httpclient.InferInput("x", [2, 4], "FP32")
        request.set_data_from_numpy(x, binary_data=True)
        got = http.infer("linear", [request]).as_numpy("y")
        np.testing.assert_allclose(got, x @ w + b)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        request = grpcclient.InferInput("x", [2, 4], "FP32")
        request.set_data_from_numpy(x)
        np.testing.assert_allclose(grpc.infer("linear", [request]).as_numpy("y"), x @ w + b)

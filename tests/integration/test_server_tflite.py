"""The LiteRT engine behind the server: a .tflite model the test writes, served over HTTP
and gRPC to tritonclient, with dynamic batching, beside an ONNX model."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from edgetier.testing import (
    RunningServer,
    demo_repository,
    make_tflite_mlp,
    running_server,
    tflite_mlp_reference,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, dict]]:
    repo = demo_repository(tmp_path_factory.mktemp("tflite") / "repo", ("small",))
    weights = make_tflite_mlp(repo / "mlp" / "1" / "model.tflite")
    (repo / "mlp" / "config.yaml").write_text(
        "max_batch_size: 4\n"
        "dynamic_batching: {max_queue_delay_microseconds: 2000}\n"
        "instance_group: [{count: 2, kind: KIND_CPU}]\n"
    )
    with running_server(repo) as server:
        yield server, weights


def test_http_and_grpc_infer(served: tuple[RunningServer, dict]) -> None:
    server, weights = served
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    expected = tflite_mlp_reference(weights, x)

    http = httpclient.InferenceServerClient(server.http_url)
    for binary in (True, False):
        given = httpclient.InferInput("x", [3, 16], "FP32")
        given.set_data_from_numpy(x, binary_data=binary)
        out = http.infer("mlp", [given]).as_numpy("y")
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    http.close()

    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    given = grpcclient.InferInput("x", [3, 16], "FP32")
    given.set_data_from_numpy(x)
    out = grpc.infer("mlp", [given]).as_numpy("y")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    grpc.close()


def test_metadata_and_config(served: tuple[RunningServer, dict]) -> None:
    server, _ = served
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    assert grpc.is_model_ready("mlp") and grpc.is_model_ready("small")
    meta = grpc.get_model_metadata("mlp", as_json=True)
    assert meta["platform"] == "litert_tflite"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "16"]}]
    config = grpc.get_model_config("mlp", as_json=True)["config"]
    assert (config["platform"], config["backend"]) == ("litert_tflite", "litert")
    assert config["default_model_filename"] == "model.tflite"
    grpc.close()
    http = httpclient.InferenceServerClient(server.http_url)
    meta = http.get_model_metadata("mlp")
    assert meta["platform"] == "litert_tflite"
    assert meta["parameters"]["execution_provider"] == "LiteRT CPU"
    http.close()


def test_concurrent_requests_are_batched(served: tuple[RunningServer, dict]) -> None:
    server, weights = served
    rng = np.random.default_rng(1)
    rows = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(32)]

    def call(x: np.ndarray) -> np.ndarray:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        given = grpcclient.InferInput("x", [1, 16], "FP32")
        given.set_data_from_numpy(x)
        try:
            result: np.ndarray = client.infer("mlp", [given]).as_numpy("y")
            return result
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(call, rows))
    for x, y in zip(rows, outputs, strict=True):
        np.testing.assert_allclose(y, tflite_mlp_reference(weights, x), rtol=1e-5, atol=1e-5)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    stats = grpc.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
    grpc.close()
    assert int(stats["inference_count"]) >= 32
    # fewer executions than requests: the batcher merged rows (a batch of 1 would be 32)
    assert int(stats["execution_count"]) < int(stats["inference_count"])


def test_a_model_path_with_tflite_is_found(tmp_path: Path) -> None:
    from edgetier.runtime import ModelRepository

    make_tflite_mlp(tmp_path / "m" / "3" / "model.tflite")
    assert ModelRepository(tmp_path).model_path("m", 3).name == "model.tflite"

"""tritonclient (HTTP and gRPC, sync and asyncio) against a live server: infer, metadata,
config, statistics, metrics."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio

from edgetier.runtime import DATATYPES
from edgetier.testing import RunningServer, demo_repository, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = demo_repository(tmp_path_factory.mktemp("protocol") / "repo")
    with running_server(repo) as running:
        yield running


def _sample(datatype: str, rows: int = 2, cols: int = 3) -> np.ndarray:
    rng = np.random.default_rng(len(datatype))
    if datatype == "BYTES":
        words = [f"w{i}-é".encode() for i in range(rows * cols)]
        return np.array(words, dtype=object).reshape(rows, cols)
    if datatype == "BOOL":
        return rng.integers(0, 2, (rows, cols)).astype(bool)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return rng.standard_normal((rows, cols)).astype(dtype)
    info = np.iinfo(datatype.lower())
    return rng.integers(info.min, info.max, (rows, cols), dtype=datatype.lower(), endpoint=True)


def _simple_inputs(module: object, binary: bool = True) -> tuple[list[object], np.ndarray]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [
        module.InferInput("INPUT0", [1, 16], "INT32"),  # type: ignore[attr-defined]
        module.InferInput("INPUT1", [1, 16], "INT32"),
    ]  # type: ignore[attr-defined]
    if module is httpclient or module is httpaio:
        inputs[0].set_data_from_numpy(a, binary_data=binary)
        inputs[1].set_data_from_numpy(np.ones_like(a), binary_data=binary)
    else:
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(np.ones_like(a))
    return inputs, a


@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_simple(server: RunningServer, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    inputs, a = _simple_inputs(httpclient, binary)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=not binary),
    ]
    result = client.infer("simple", inputs, outputs=outputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + 1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - 1)
    assert result.get_response()["id"] == "r1"


def test_grpc_infer_simple_and_requested_output(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs, a = _simple_inputs(grpcclient)
    result = client.infer(
        "simple", inputs, model_version="1", outputs=[grpcclient.InferRequestedOutput("OUTPUT1")]
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - 1)
    assert result.as_numpy("OUTPUT0") is None


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("protocol", ["http-json", "http-binary", "grpc"])
def test_identity_every_datatype(server: RunningServer, protocol: str, datatype: str) -> None:
    data = _sample(datatype)
    name = f"IN_{datatype}"
    others = [d for d in DATATYPES if d != datatype]
    if protocol == "grpc":
        client: object = grpcclient.InferenceServerClient(server.grpc_url)
        module: object = grpcclient
    else:
        client = httpclient.InferenceServerClient(server.http_url)
        module = httpclient
    inputs = []
    for dt in [datatype, *others]:
        arr = data if dt == datatype else _sample(dt)
        tensor = module.InferInput(f"IN_{dt}", list(arr.shape), dt)  # type: ignore[attr-defined]
        if module is httpclient:
            tensor.set_data_from_numpy(arr, binary_data=protocol == "http-binary")
        else:
            tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    if module is httpclient:
        outputs = [
            httpclient.InferRequestedOutput(
                f"OUT_{datatype}", binary_data=protocol == "http-binary"
            )
        ]
    else:
        outputs = [grpcclient.InferRequestedOutput(f"OUT_{datatype}")]
    result = client.infer("identity", inputs, outputs=outputs)  # type: ignore[attr-defined]
    got = result.as_numpy(f"OUT_{datatype}")
    assert name.replace("IN_", "OUT_") == f"OUT_{datatype}"
    if datatype == "BYTES":
        assert [bytes(x) if not isinstance(x, str) else x.encode() for x in got.ravel()] == list(
            data.ravel()
        )
    else:
        np.testing.assert_array_equal(got, data)
        assert got.dtype == data.dtype


def test_metadata_config_and_health(server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(server.http_url)
    grpc_ = grpcclient.InferenceServerClient(server.grpc_url)
    assert http.is_server_live() and http.is_server_ready()
    assert grpc_.is_server_live() and grpc_.is_server_ready()
    assert http.is_model_ready("simple") and grpc_.is_model_ready("simple", "1")
    assert not http.is_model_ready("nope") and not grpc_.is_model_ready("nope")
    meta = http.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"]
    assert "system_shared_memory" in grpc_.get_server_metadata().extensions
    model = http.get_model_metadata("simple")
    assert model["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}
    assert model["parameters"]["execution_provider"].endswith("ExecutionProvider")
    gmodel = grpc_.get_model_metadata("simple", as_json=True)
    assert gmodel["versions"] == ["1"]
    assert gmodel["outputs"][1]["name"] == "OUTPUT1"
    config = http.get_model_config("simple")
    assert config["max_batch_size"] == 8
    assert config["input"][0]["data_type"] == "TYPE_INT32"
    gconfig = grpc_.get_model_config("simple", as_json=True)["config"]
    assert gconfig["name"] == "simple"
    assert gconfig["input"][0]["dims"] == ["16"]


def test_statistics_and_metrics(server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(server.http_url)
    grpc_ = grpcclient.InferenceServerClient(server.grpc_url)
    before = http.get_inference_statistics("small")["model_stats"][0]
    x = np.ones((3, 16), dtype=np.float32)
    tensor = grpcclient.InferInput("input", [3, 16], "FP32")
    tensor.set_data_from_numpy(x)
    for _ in range(2):
        grpc_.infer("small", [tensor])
    after = http.get_inference_statistics("small")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] == (
        before["inference_stats"]["success"]["count"] + 2
    )
    assert after["inference_count"] == before["inference_count"] + 6
    assert after["execution_count"] >= before["execution_count"] + 1
    assert any(b["batch_size"] == 3 for b in after["batch_stats"])
    assert after["execution_provider"].endswith("ExecutionProvider")
    gstats = grpc_.get_inference_statistics("small", as_json=True)["model_stats"][0]
    assert gstats["name"] == "small" and gstats["version"] == "1"
    everything = http.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == {"simple", "small", "identity"}
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    for name in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_pending_request_count",
        "edgetier_batch_size_bucket",
        "edgetier_queue_wait_us_bucket",
    ):
        assert f"\n{name}{{" in text, name
    waited = next(
        x for x in text.splitlines() if x.startswith('edgetier_queue_wait_us_count{model="small"')
    )
    assert float(waited.split()[-1]) == after["inference_stats"]["success"]["count"]
    assert "# TYPE nv_inference_request_success counter" in text
    line = next(x for x in text.splitlines() if x.startswith('nv_inference_count{model="small"'))
    assert float(line.split()[-1]) == after["inference_count"]


def test_grpc_stream_infer(server: RunningServer) -> None:
    import queue

    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        inputs, a = _simple_inputs(grpcclient)
        client.async_stream_infer("simple", inputs, request_id="s1")
        bad = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
        bad.set_data_from_numpy(a)
        client.async_stream_infer("simple", [bad], request_id="s2")
        got = [results.get(timeout=20) for _ in range(2)]
    finally:
        client.stop_stream()
    good = [r for r, e in got if e is None]
    errors = [e for r, e in got if e is not None]
    assert len(good) == 1 and len(errors) == 1
    np.testing.assert_array_equal(good[0].as_numpy("OUTPUT0"), a + 1)  # type: ignore[attr-defined]
    assert "INPUT1" in str(errors[0])


async def test_asyncio_clients(server: RunningServer) -> None:
    async with httpaio.InferenceServerClient(server.http_url) as http:
        assert await http.is_server_ready()
        inputs, a = _simple_inputs(httpaio)
        result = await http.infer("simple", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + 1)
        meta = await http.get_model_metadata("small")
        assert meta["outputs"][0]["shape"] == [-1, 4]
        stats = await http.get_inference_statistics("simple")
        assert stats["model_stats"][0]["name"] == "simple"
    grpc_ = grpcaio.InferenceServerClient(server.grpc_url)
    try:
        assert await grpc_.is_server_live()
        inputs, a = _simple_inputs(grpcaio)
        result = await grpc_.infer("simple", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - 1)
        config = await grpc_.get_model_config("identity", as_json=True)
        assert config["config"]["max_batch_size"] == 8
        index = await grpc_.get_model_repository_index(as_json=True)
        assert {m["name"] for m in index["models"]} == {"simple", "small", "identity"}
    finally:
        await grpc_.close()


def test_examples_curl_body_is_valid(server: RunningServer, tmp_path: Path) -> None:
    import json
    import shlex

    from edgetier.server._examples import examples

    text = examples("127.0.0.1", server.server.http_port, server.server.grpc_port, None)
    curl = next(line for line in text.splitlines() if line.startswith("curl"))
    argv = shlex.split(curl)
    url = argv[argv.index("-X") + 2]
    body = argv[argv.index("-d") + 1].encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert answer["outputs"][0]["data"] == [2 * i for i in range(16)]
    snippet = text.split("# Python, tritonclient over gRPC (pip install 'tritonclient[grpc]'):\n")[
        1
    ]
    snippet = snippet.split("\n\n# Load test")[0]
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    namespace: dict[str, object] = {"print": lambda *args: None}
    exec(compile(snippet, str(script), "exec"), namespace)
    result = namespace["result"]
    np.testing.assert_array_equal(
        result.as_numpy("OUTPUT0"),  # type: ignore[attr-defined]
        np.arange(16, dtype=np.int32).reshape(1, 16) + 1,
    )

"""System shared memory, model control (explicit mode), failing models, overload."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from edgetier.testing import demo_repository, edit_config, running_server

pytestmark = pytest.mark.integration


def _region(size: int) -> tuple[str, object]:
    key = f"/edgetier-test-{uuid.uuid4().hex[:12]}"
    return key, shm.create_shared_memory_region(key.strip("/"), key, size)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_system_shared_memory_inputs_and_outputs(tmp_path: Path, protocol: str) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple",))
    module = httpclient if protocol == "http" else grpcclient
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 5, dtype=np.int32)
    in_key, in_handle = _region(128)
    out_key, out_handle = _region(128)
    try:
        shm.set_shared_memory_region(in_handle, [a, b])
        with running_server(repo) as server:
            url = server.http_url if protocol == "http" else server.grpc_url
            client = module.InferenceServerClient(url)
            client.register_system_shared_memory("in", in_key, 128)
            client.register_system_shared_memory("out", out_key, 128)
            status = client.get_system_shared_memory_status(
                **({"as_json": True} if protocol == "grpc" else {})
            )
            names = status if protocol == "http" else list(status["regions"].values())
            assert {r["name"] for r in names} == {"in", "out"}
            inputs = [
                module.InferInput("INPUT0", [1, 16], "INT32"),
                module.InferInput("INPUT1", [1, 16], "INT32"),
            ]
            inputs[0].set_shared_memory("in", 64)
            inputs[1].set_shared_memory("in", 64, offset=64)
            outputs = [
                module.InferRequestedOutput("OUTPUT0"),
                module.InferRequestedOutput("OUTPUT1"),
            ]
            outputs[0].set_shared_memory("out", 64)
            outputs[1].set_shared_memory("out", 64, offset=64)
            result = client.infer("simple", inputs, outputs=outputs)
            out0 = result.get_output("OUTPUT0")
            assert out0 is not None
            total = shm.get_contents_as_numpy(out_handle, np.int32, [2, 16])
            np.testing.assert_array_equal(total[0], (a + b)[0])
            np.testing.assert_array_equal(total[1], (a - b)[0])
            # a region too small for the output: 400 naming the output and the size
            small = [module.InferRequestedOutput("OUTPUT0")]
            small[0].set_shared_memory("out", 32)
            with pytest.raises(InferenceServerException, match=r"OUTPUT0.*32"):
                client.infer("simple", inputs, outputs=small)
            # an input region range past the end of the region
            inputs[1].set_shared_memory("in", 64, offset=100)
            with pytest.raises(InferenceServerException, match=r"INPUT1.*exceeds region"):
                client.infer("simple", inputs)
            client.unregister_system_shared_memory("in")
            inputs[1].set_shared_memory("in", 64, offset=64)
            with pytest.raises(InferenceServerException, match="'in' is not registered"):
                client.infer("simple", inputs)
            client.unregister_system_shared_memory()
            status = client.get_system_shared_memory_status(
                **({"as_json": True} if protocol == "grpc" else {})
            )
            assert not (status if protocol == "http" else status.get("regions"))
            with pytest.raises(InferenceServerException, match="does not exist"):
                client.register_system_shared_memory("gone", "/edgetier-no-such-key", 64)
            with pytest.raises(InferenceServerException, match="not supported"):
                client.get_cuda_shared_memory_status()
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


def test_explicit_model_control_and_failing_models(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("simple", "small"))
    broken = repo / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an onnx model")
    bad_config = repo / "badconfig"
    (bad_config / "1").mkdir(parents=True)
    (bad_config / "1" / "model.onnx").write_bytes(
        (repo / "small" / "1" / "model.onnx").read_bytes()
    )
    (bad_config / "config.yaml").write_text("max_batch_size: 8\nno_such_field: 1\n")
    with running_server(
        repo, model_control_mode="explicit", load_models=["simple", "broken", "badconfig"]
    ) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc_ = grpcclient.InferenceServerClient(server.grpc_url)
        index = {m["name"]: m for m in http.get_model_repository_index()}
        assert index["simple"]["state"] == "READY"
        assert index["small"]["state"] == "UNAVAILABLE"
        assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]
        assert "no_such_field" in index["badconfig"]["reason"]
        # the others go on serving
        tensor = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
        tensor.set_data_from_numpy(np.ones((1, 16), np.int32))
        other = grpcclient.InferInput("INPUT1", [1, 16], "INT32")
        other.set_data_from_numpy(np.ones((1, 16), np.int32))
        assert grpc_.infer("simple", [tensor, other]).as_numpy("OUTPUT0").sum() == 32
        with pytest.raises(InferenceServerException, match="broken"):
            http.load_model("broken")
        with pytest.raises(InferenceServerException, match=r"not loaded|UNAVAILABLE"):
            grpc_.get_model_metadata("small")
        grpc_.load_model("small")
        assert http.is_model_ready("small")
        http.unload_model("simple")
        assert not grpc_.is_model_ready("simple")
        with pytest.raises(InferenceServerException):
            grpc_.infer("simple", [tensor, other])
        http.load_model("simple")
        assert grpc_.infer("simple", [tensor, other]).as_numpy("OUTPUT1").sum() == 0
        with pytest.raises(InferenceServerException, match="not in the repository"):
            http.load_model("nope")
        ready = {
            m["name"]
            for m in grpc_.get_model_repository_index(as_json=True)["models"]
            if m.get("state") == "READY"
        }
        assert ready == {"simple", "small"}


def test_reload_keeps_requests_in_flight(tmp_path: Path) -> None:
    repo = demo_repository(tmp_path / "repo", ("small",))
    edit_config(
        repo,
        "small",
        dynamic_batching={"max_queue_delay_microseconds": 300000, "preferred_batch_size": [8]},
    )
    with running_server(repo, model_control_mode="explicit", load_models=["small"]) as server:

        async def scenario() -> list[object]:
            import tritonclient.grpc.aio as grpcaio

            client = grpcaio.InferenceServerClient(server.grpc_url)
            try:
                tensor = grpcaio.InferInput("input", [1, 16], "FP32")
                tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
                pending = [asyncio.ensure_future(client.infer("small", [tensor])) for _ in range(3)]
                await asyncio.sleep(0.05)
                await client.load_model("small")  # reload while three wait in the queue
                return list(await asyncio.gather(*pending, return_exceptions=True))
            finally:
                await client.close()

        results = asyncio.run(scenario())
        assert all(not isinstance(r, BaseException) for r in results), results
        assert all(r.as_numpy("output").shape == (1, 4) for r in results)  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_overload_is_refused_at_once(tmp_path: Path, protocol: str) -> None:
    repo = demo_repository(tmp_path / "repo", ("small",))
    # a long queue delay keeps the first request queued; the queue holds one
    edit_config(
        repo,
        "small",
        dynamic_batching={"max_queue_delay_microseconds": 2_000_000, "max_queue_size": 1},
    )
    with running_server(repo) as server:

        async def scenario() -> tuple[object, object]:
            if protocol == "http":
                import aiohttp

                body = {
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}
                    ]
                }
                url = f"http://{server.http_url}/v2/models/small/infer"
                async with aiohttp.ClientSession() as session:

                    async def post() -> tuple[int, str | None]:
                        async with session.post(url, json=body) as response:
                            await response.read()
                            return response.status, response.headers.get("Retry-After")

                    first = asyncio.ensure_future(post())
                    await asyncio.sleep(0.2)
                    second = await post()
                    return await first, second
            import tritonclient.grpc.aio as grpcaio

            client = grpcaio.InferenceServerClient(server.grpc_url)
            try:
                tensor = grpcaio.InferInput("input", [1, 16], "FP32")
                tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
                first = asyncio.ensure_future(client.infer("small", [tensor]))
                await asyncio.sleep(0.2)
                try:
                    await client.infer("small", [tensor])
                    second: object = None
                except InferenceServerException as exc:
                    second = exc
                return await first, second
            finally:
                await client.close()

        first, second = asyncio.run(scenario())
        if protocol == "http":
            assert first == (200, None)
            status, retry_after = second  # type: ignore[misc]
            assert status == 503 and retry_after is not None and int(retry_after) >= 1
        else:
            assert first.as_numpy("output").shape == (1, 4)  # type: ignore[attr-defined]
            assert isinstance(second, InferenceServerException)
            assert second.status() == "StatusCode.UNAVAILABLE"
            assert "max_queue_size 1" in second.message()

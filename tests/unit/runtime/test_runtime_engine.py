"""Engines on ONNX Runtime: CPU runs, provider fallback, options, datatypes, bad files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgetier.errors import InvalidInputError, ModelLoadError, ModelNotReadyError
from edgetier.runtime import (
    DATATYPES,
    ModelRepository,
    TensorSpec,
    load_engine,
    parse_config,
    to_numpy_dtype,
)
from edgetier.runtime._onnx import plan_providers

AddModel = Callable[..., Path]
GpuCount = Callable[[int], None]
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_TRT = "TensorrtExecutionProvider" in ort.get_available_providers()


def _engine(repo_root: Path, name: str, **kwargs: object):  # type: ignore[no-untyped-def]
    repo = ModelRepository(repo_root)
    return load_engine(repo.model_path(name, 1), repo.config(name), **kwargs)  # type: ignore[arg-type]


def test_simple_runs_on_cpu(repo_root: Path, add_model: AddModel) -> None:
    add_model("simple", "simple", config="optimization: {execution_providers: [cpu]}\n")
    engine = _engine(repo_root, "simple")
    assert engine.provider == "CPUExecutionProvider"
    assert engine.inputs == [
        TensorSpec("INPUT0", "INT32", [-1, 16]),
        TensorSpec("INPUT1", "INT32", [-1, 16]),
    ]
    rng = np.random.default_rng(0)
    a = rng.integers(-100, 100, (3, 16), dtype=np.int32)
    b = rng.integers(-100, 100, (3, 16), dtype=np.int32)
    out = engine.run({"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    only = engine.run({"INPUT0": a, "INPUT1": b}, ["OUTPUT1"])
    assert list(only) == ["OUTPUT1"]


def test_fallback_when_gpu_providers_are_absent(
    repo_root: Path, add_model: AddModel, caplog: pytest.LogCaptureFixture, gpus: GpuCount
) -> None:
    if HAS_CUDA:
        pytest.skip("this onnxruntime has CUDA: no fallback to observe")
    gpus(0)
    add_model("small")  # default order: tensorrt, cuda, cpu
    with caplog.at_level(logging.INFO, logger="edgetier.runtime"):
        engine = _engine(repo_root, "small")
    assert engine.provider == "CPUExecutionProvider"
    lines = [r for r in caplog.records if r.name == "edgetier.runtime"]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (
            logging.INFO,
            "this node has no GPU: models run on CPUExecutionProvider (this onnxruntime has "
            + ", ".join(ort.get_available_providers())
            + ")",
        )
    ]
    out = engine.run({"input": np.ones((2, 16), np.float32)})
    assert out["output"].shape == (2, 4)


def test_cpu_kind_does_not_warn(
    repo_root: Path, add_model: AddModel, caplog: pytest.LogCaptureFixture
) -> None:
    add_model("small", config="instance_group: [{kind: KIND_CPU}]\n")
    with caplog.at_level(logging.DEBUG, logger="edgetier.runtime"):
        engine = _engine(repo_root, "small")
    assert engine.provider == "CPUExecutionProvider"
    records = [r for r in caplog.records if r.name == "edgetier.runtime"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.DEBUG, "model 'small' instance 0: running on CPUExecutionProvider")
    ]


def test_no_available_provider_is_a_load_error(repo_root: Path, add_model: AddModel) -> None:
    if HAS_CUDA:
        pytest.skip("this onnxruntime has CUDA")
    add_model("small", config="optimization: {execution_providers: [tensorrt, cuda]}\n")
    with pytest.raises(ModelLoadError, match=r"none of .*\['tensorrt', 'cuda'\].*add 'cpu'"):
        _engine(repo_root, "small")


def test_missing_and_corrupt_model_files(repo_root: Path) -> None:
    config = parse_config({}, source="x", name="m")
    missing = repo_root / "m" / "1" / "model.onnx"
    with pytest.raises(ModelLoadError, match=f"{missing} does not exist"):
        load_engine(missing, config)
    missing.parent.mkdir(parents=True)
    missing.write_bytes(b"garbage, not a protobuf")
    with pytest.raises(ModelLoadError) as info:
        load_engine(missing, config)
    message = str(info.value)
    assert str(missing) in message
    assert "ONNX Runtime cannot load" in message
    assert len(message.split(": ", 3)[-1]) > 5  # ORT's own reason follows


def _identity_batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for dt in DATATYPES:
        if dt == "BYTES":
            value = np.array([[b"edge", "tier é".encode(), b""], [b"a", b"\x00b", b"c"]], object)
        elif dt == "BOOL":
            value = rng.integers(0, 2, (2, 3)).astype(bool)
        else:
            dtype = to_numpy_dtype(dt)
            if dtype.kind == "f":
                value = rng.standard_normal((2, 3)).astype(dtype)
            else:
                info = np.iinfo(dtype)
                value = rng.integers(info.min, info.max, (2, 3), dtype=dtype, endpoint=True)
        feed[f"IN_{dt}"] = value
    return feed


def test_every_datatype_through_identity(repo_root: Path, add_model: AddModel) -> None:
    add_model("identity", "identity", config="instance_group: [{kind: KIND_CPU}]\n")
    engine = _engine(repo_root, "identity")
    feed = _identity_batch(np.random.default_rng(1))
    out = engine.run(feed)
    assert sorted(out) == sorted(f"OUT_{dt}" for dt in DATATYPES)
    for dt in DATATYPES:
        got, sent = out[f"OUT_{dt}"], feed[f"IN_{dt}"]
        assert got.dtype == sent.dtype, dt
        assert got.shape == sent.shape, dt
        if dt == "BYTES":
            assert all(isinstance(v, bytes) for v in got.ravel())
            assert got.tolist() == sent.tolist()
        else:
            np.testing.assert_array_equal(got, sent)


def test_bytes_that_are_not_utf8(repo_root: Path, add_model: AddModel) -> None:
    add_model("identity", "identity", config="instance_group: [{kind: KIND_CPU}]\n")
    engine = _engine(repo_root, "identity")
    feed = _identity_batch(np.random.default_rng(1))
    feed["IN_BYTES"] = np.array([[b"\xff\xfe"]], object)
    with pytest.raises(InvalidInputError, match=r"input 'IN_BYTES'.*not valid UTF-8"):
        engine.run({"IN_BYTES": feed["IN_BYTES"]}, ["OUT_BYTES"])


def test_bad_input_maps_to_invalid_input(repo_root: Path, add_model: AddModel) -> None:
    add_model("small", config="instance_group: [{kind: KIND_CPU}]\n")
    engine = _engine(repo_root, "small")
    with pytest.raises(InvalidInputError, match="model 'small'"):
        engine.run({"input": np.ones((2, 15), np.float32)})


def test_run_is_thread_safe(repo_root: Path, add_model: AddModel) -> None:
    add_model("simple", "simple", config="instance_group: [{kind: KIND_CPU}]\n")
    engine = _engine(repo_root, "simple")

    def call(i: int) -> bool:
        a = np.full((1 + i % 4, 16), i, np.int32)
        b = np.arange(16, dtype=np.int32)[np.newaxis].repeat(len(a), 0)
        out = engine.run({"INPUT0": a, "INPUT1": b})
        return bool(np.array_equal(out["OUTPUT0"], a + b) and len(out["OUTPUT1"]) == len(a))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(call, range(64)))


def test_close(repo_root: Path, add_model: AddModel) -> None:
    add_model("small", config="instance_group: [{kind: KIND_CPU}]\n")
    engine = _engine(repo_root, "small")
    engine.close()
    with pytest.raises(ModelNotReadyError, match="closed"):
        engine.run({"input": np.ones((1, 16), np.float32)})


def test_instance_out_of_range(repo_root: Path, add_model: AddModel) -> None:
    add_model("small", config="instance_group: [{count: 2, kind: KIND_CPU}]\n")
    assert _engine(repo_root, "small", instance=1).provider == "CPUExecutionProvider"
    with pytest.raises(ModelLoadError, match=r"instance 2 is out of range.*2 instance"):
        _engine(repo_root, "small", instance=2)


# -- provider options (checked without a GPU: the plan is what ORT receives) ------------

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _config(optimization: dict[str, object], **extra: object):  # type: ignore[no-untyped-def]
    data = {
        "max_batch_size": 0,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 3]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1, 3]}],
        "optimization": optimization,
        **extra,
    }
    return parse_config(data, source="x", name="m")


@pytest.mark.parametrize(
    ("precision", "fp16", "int8"),
    [("fp32", False, False), ("fp16", True, False), ("int8", True, True)],
)
def test_tensorrt_options(precision: str, fp16: bool, int8: bool) -> None:
    plan = plan_providers(
        _config({"precision": precision, "engine_cache_dir": "/cache"}), available=ALL
    )
    name, options = plan.providers[0]
    assert name == "TensorrtExecutionProvider"
    assert options["trt_fp16_enable"] is fp16
    assert options["trt_int8_enable"] is int8
    assert options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == "/cache"
    assert [n for n, _ in plan.providers] == ALL
    assert plan.missing == []


def test_cuda_graphs_only_with_fixed_shapes() -> None:
    fixed = plan_providers(
        _config({"execution_providers": ["cuda", "cpu"], "cuda_graphs": True}), available=ALL
    )
    assert fixed.providers[0] == (
        "CUDAExecutionProvider",
        {"device_id": 0, "enable_cuda_graph": True},
    )
    assert fixed.cuda_graphs
    batching = _config({"execution_providers": ["cuda", "cpu"], "cuda_graphs": True})
    batching = batching.model_copy(update={"max_batch_size": 4})  # adds a dynamic batch dim
    plan = plan_providers(batching, available=ALL)
    assert "enable_cuda_graph" not in plan.providers[0][1]
    assert not plan.cuda_graphs


def test_gpu_placement_follows_instance_groups() -> None:
    config = _config(
        {}, instance_group=[{"count": 1, "kind": "KIND_CPU"}, {"count": 2, "gpus": [1, 3]}]
    )
    assert config.instance_count == 5
    placements = [plan_providers(config, instance=i, available=ALL) for i in range(5)]
    assert [p.providers[0][0] for p in placements] == ["CPUExecutionProvider"] + [
        "TensorrtExecutionProvider"
    ] * 4
    assert [p.device_id for p in placements[1:]] == [1, 1, 3, 3]


def test_missing_providers_are_listed_in_order() -> None:
    plan = plan_providers(_config({}), available=["CPUExecutionProvider"])
    assert plan.missing == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert plan.providers == [("CPUExecutionProvider", {})]


def test_cpu_threads_per_instance(repo_root: Path, add_model: AddModel) -> None:
    from edgetier.runtime._onnx import _cpu_threads

    assert _cpu_threads(_config({"intra_op_threads": 3})) == 3
    assert _cpu_threads(_config({})) == 0  # one instance: ORT's default
    many = _config({}, instance_group=[{"count": 64, "kind": "KIND_CPU"}])
    assert _cpu_threads(many) == 1  # shared out, never oversubscribed


# -- on a GPU machine: each test checks that it ran where it says, never after a fallback --


def _all_on(engine, provider: str) -> None:  # type: ignore[no-untyped-def]
    """The engine runs on ``provider``: most nodes there, and nothing fell back."""
    assert engine.notes == [], engine.notes
    assert engine.provider == provider, engine.node_counts
    counts = engine.node_counts
    assert counts is not None and counts[provider] == max(counts.values()), counts


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDA execution provider")
def test_cuda_provider_runs(
    repo_root: Path, add_model: AddModel, make_cnn: Callable[..., Path]
) -> None:
    add_model("cnn", "cnn", config="optimization: {execution_providers: [cuda, cpu]}\n")
    engine = _engine(repo_root, "cnn")
    _all_on(engine, "CUDAExecutionProvider")
    x = np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)
    reference = _engine_cpu(repo_root, "cnn").run({"x": x})["y"]
    np.testing.assert_allclose(engine.run({"x": x})["y"], reference, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDA execution provider")
def test_cuda_graphs_on_fixed_shapes(repo_root: Path, make_cnn: Callable[..., Path]) -> None:
    make_cnn(repo_root / "cnn" / "1" / "model.onnx", batch=2)
    (repo_root / "cnn" / "config.yaml").write_text(
        "optimization: {execution_providers: [cuda], cuda_graphs: true}\n"
    )
    engine = _engine(repo_root, "cnn")
    _all_on(engine, "CUDAExecutionProvider")
    assert engine.cuda_graphs  # graph capture was accepted: every node on CUDA
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    first = engine.run({"x": x})["y"]
    np.testing.assert_allclose(engine.run({"x": x})["y"], first, rtol=1e-5)
    np.testing.assert_allclose(
        first, _engine_cpu(repo_root, "cnn").run({"x": x})["y"], rtol=1e-3, atol=1e-4
    )


def _engine_files(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.glob("*.engine")}


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="onnxruntime has no TensorRT execution provider")
def test_tensorrt_fp16_with_engine_cache(repo_root: Path, make_cnn: Callable[..., Path]) -> None:
    model_dir = repo_root / "cnn"
    make_cnn(model_dir / "1" / "model.onnx", seed=1, channels=64, size=64)
    make_cnn(model_dir / "2" / "model.onnx", seed=2, channels=64, size=64)  # retrained
    config = "optimization: {precision: %s, engine_cache_dir: trt-cache}\n"
    (model_dir / "config.yaml").write_text(config % "fp16")
    engine = _engine(repo_root, "cnn")
    _all_on(engine, "TensorrtExecutionProvider")
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    reference = _engine_cpu(repo_root, "cnn").run({"x": x})["y"]
    half = engine.run({"x": x})["y"]
    np.testing.assert_allclose(half, reference, rtol=3e-2, atol=3e-2 * np.abs(reference).max())

    # a cache hit: a second load of version 1 builds nothing and rewrites nothing
    cache_1 = model_dir / "trt-cache" / "1"
    built = _engine_files(cache_1)
    assert len(built) == 1 and next(iter(built)).startswith("edgetier_"), built
    _all_on(_engine(repo_root, "cnn"), "TensorrtExecutionProvider")
    assert _engine_files(cache_1) == built

    # not across versions: version 2 builds its own engine, under its own name
    repo = ModelRepository(repo_root)
    _all_on(load_engine(repo.model_path("cnn", 2), repo.config("cnn")), "TensorrtExecutionProvider")
    (other,) = _engine_files(model_dir / "trt-cache" / "2")
    assert other.split("_")[1] != next(iter(built)).split("_")[1]  # another content digest
    assert _engine_files(cache_1) == built

    # FP16 in effect: activations past FP16's largest value (65504) overflow in the FP16
    # engine and stay finite in the FP32 one
    big = {"x": x * np.float32(1e6)}
    assert not np.isfinite(engine.run(big)["y"]).all()
    (model_dir / "config.yaml").write_text(config % "fp32")
    full = _engine(repo_root, "cnn")
    _all_on(full, "TensorrtExecutionProvider")
    assert np.isfinite(full.run(big)["y"]).all()


def _engine_cpu(repo_root: Path, name: str):  # type: ignore[no-untyped-def]
    repo = ModelRepository(repo_root)
    config = repo.config(name)
    config = config.model_copy(
        update={
            "instance_group": [
                config.instance_group[0].model_copy(update={"kind": "KIND_CPU", "gpus": []})
            ]
        }
    )
    return load_engine(repo.model_path(name, 1), config)

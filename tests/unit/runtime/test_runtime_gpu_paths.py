"""GPU paths on a CPU machine, through a fake InferenceSession that behaves like ONNX
Runtime's (conftest.FakeOrt): engine caches per version, explicit provider fallback that
keeps options, CUDA graphs only where they hold, where nodes really run, instances spread
over GPUs as Triton does, and one log line per node instead of a warning per model."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import GRAPH_CAPTURE_REFUSED, FakeOrt, make_tiny_cnn

from edgetier.errors import ModelLoadError
from edgetier.runtime import ModelRepository, load_engine, load_engines, parse_config

AddModel = Callable[..., Path]
GpuCount = Callable[[int], None]
TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
NO_LIBNVINFER = (
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1539 "
    "onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : "
    "FAIL : Failed to load library libonnxruntime_providers_tensorrt.so with error: "
    "libnvinfer.so.10: cannot open shared object file: No such file or directory"
)


def _load(repo_root: Path, name: str, version: int = 1, instance: int = 0):  # type: ignore[no-untyped-def]
    repo = ModelRepository(repo_root)
    return load_engine(repo.model_path(name, version), repo.config(name), instance=instance)


def _options(attempt, provider: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return dict(zip(attempt.providers, attempt.options, strict=True)).get(provider, {})


# -- 1. TensorRT engine cache per version ---------------------------------------------


def test_each_version_gets_its_own_tensorrt_engine_cache(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    gpus(1)
    model_dir = add_model("cnn", "cnn", config="optimization: {engine_cache_dir: trt-cache}\n")
    make_tiny_cnn(model_dir / "1" / "model.onnx", seed=1)
    make_tiny_cnn(model_dir / "2" / "model.onnx", seed=2)  # retrained: same graph, new weights
    (model_dir / "3").mkdir()
    (model_dir / "3" / "model.onnx").write_bytes((model_dir / "1" / "model.onnx").read_bytes())
    for version in (1, 2, 3):
        _load(repo_root, "cnn", version)
    caches = [_options(a, TRT) for a in fake_ort.created]
    paths = [c["trt_engine_cache_path"] for c in caches]
    prefixes = [c["trt_engine_cache_prefix"] for c in caches]
    # ORT's cache key ignores the weights: versions must never share an engine file name
    assert paths == [str(model_dir / "trt-cache" / v) for v in ("1", "2", "3")]
    assert prefixes[0] != prefixes[1]  # same graph and names, other weights
    assert prefixes[0] == prefixes[2]  # the key follows the content
    assert all(Path(p).is_dir() for p in paths)
    # layer timings hold no weights: one timing cache for the model
    assert {c["trt_timing_cache_path"] for c in caches} == {str(model_dir / "trt-cache")}


def test_an_absolute_engine_cache_is_split_by_model_and_version(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount, tmp_path: Path
) -> None:
    gpus(1)
    cache = tmp_path / "shared-cache"
    for name in ("a", "b"):
        add_model(name, "cnn", config=f"optimization: {{engine_cache_dir: {cache}}}\n")
        _load(repo_root, name)
    paths = [_options(a, TRT)["trt_engine_cache_path"] for a in fake_ort.created]
    assert paths == [str(cache / "a" / "1"), str(cache / "b" / "1")]


def test_writing_an_engine_cache_is_not_a_model_change(
    repo_root: Path, add_model: AddModel
) -> None:
    add_model("cnn", "cnn", config="optimization: {engine_cache_dir: trt-cache}\n")
    repo = ModelRepository(repo_root)
    before = repo.fingerprint("cnn")
    (repo_root / "cnn" / "trt-cache" / "1").mkdir(parents=True)
    (repo_root / "cnn" / "trt-cache" / "1" / "x.engine").write_bytes(b"engine")
    assert repo.fingerprint("cnn") == before  # a polling server does not reload for it
    make_tiny_cnn(repo_root / "cnn" / "2" / "model.onnx")
    assert repo.fingerprint("cnn") != before


# -- 2. ONNX Runtime's silent fallback off; an explicit one that keeps the options -------


def test_a_provider_that_fails_to_start_keeps_the_others_options(
    repo_root: Path,
    add_model: AddModel,
    fake_ort: FakeOrt,
    gpus: GpuCount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus(4)
    fake_ort.fail[TRT] = NO_LIBNVINFER
    add_model("cnn", "cnn", config="instance_group: [{count: 1, gpus: [3]}]\n")
    with caplog.at_level(logging.WARNING, logger="edgetier.runtime"):
        engine = _load(repo_root, "cnn")
    first, last = fake_ort.attempts[0], fake_ort.attempts[-1]
    assert first.kwargs.get("enable_fallback") == 0  # ORT's own fallback is off
    assert first.outcome == NO_LIBNVINFER
    assert last.providers == [CUDA, CPU]
    assert _options(last, CUDA) == {"device_id": 3}  # ORT's fallback would lose it (GPU 0)
    assert engine.provider == CUDA
    assert engine.device_id == 3
    note = engine.notes[0]
    assert note.startswith(f"{TRT} failed to start (/onnxruntime_src")
    assert note.endswith(f"running on {CUDA}, {CPU} with their own options")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"model 'cnn' instance 0: {note}"]


def test_onnxruntime_fallback_would_have_dropped_the_options(fake_ort: FakeOrt) -> None:
    """The fake is faithful: left on, ONNX Runtime's fallback retries without options."""
    fake_ort.fail[TRT] = NO_LIBNVINFER
    path = make_tiny_cnn(Path(os.environ.get("TMPDIR", "/tmp")) / f"fb-{os.getpid()}.onnx")
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(path),
        providers=[TRT, CUDA, CPU],
        provider_options=[{"device_id": 3}, {"device_id": 3}, {}],
    )
    assert session.get_providers() == [CUDA, CPU]
    assert session.get_provider_options()[CUDA]["device_id"] == "0"
    path.unlink()


def test_a_provider_onnxruntime_leaves_out_is_reported(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    gpus(1)
    fake_ort.skip.add(TRT)  # ORT 1.16+: logs the failure and builds the session without it
    add_model("cnn", "cnn")
    engine = _load(repo_root, "cnn")
    assert engine.provider == CUDA
    assert engine.notes == [
        f"{TRT} failed to start (ONNX Runtime could not create it); running on {CUDA}, "
        f"{CPU} with their own options"
    ]


def test_the_fallback_is_in_the_model_metadata(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    from edgetier.server._manager import ModelVersion

    gpus(1)
    fake_ort.fail[TRT] = NO_LIBNVINFER
    add_model("cnn", "cnn", config="instance_group: [{count: 2}]\n")
    repo = ModelRepository(repo_root)
    config = repo.config("cnn")
    version = ModelVersion("cnn", 1, config, load_engines(repo.model_path("cnn", 1), config))
    params = version.metadata(["1"])["parameters"]
    assert params["execution_provider"] == CUDA
    assert params["engine_notes"].startswith(f"{TRT} failed to start")
    assert len(version.notes) == 1  # two instances, one note
    triton = version.config_json()["parameters"]
    assert triton["engine_notes"] == {"string_value": params["engine_notes"]}


def test_a_model_error_is_not_retried_on_other_providers(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    gpus(1)
    add_model("cnn", "cnn")
    (repo_root / "cnn" / "1" / "model.onnx").write_bytes(b"not a protobuf")
    config = parse_config(
        {
            "max_batch_size": 0,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 3, 16, 16]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1, 4]}],
        },
        source="x",
        name="cnn",
    )
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load .*INVALID_PROTOBUF"):
        load_engine(repo_root / "cnn" / "1" / "model.onnx", config)
    assert len(fake_ort.attempts) == 1


# -- 3. CUDA graphs only where they can hold ------------------------------------------

FIXED = "max_batch_size: 0\noptimization: {cuda_graphs: true%s}\n"


def _fixed_cnn(repo_root: Path, extra: str = "") -> None:
    make_tiny_cnn(repo_root / "cnn" / "1" / "model.onnx", batch=2)
    (repo_root / "cnn" / "config.yaml").write_text(FIXED % extra)


def test_cuda_graphs_are_not_asked_of_cuda_behind_tensorrt(
    repo_root: Path, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    gpus(1)
    _fixed_cnn(repo_root)  # default order: TensorRT first
    engine = _load(repo_root, "cnn")
    assert [a.providers for a in fake_ort.attempts] == [[TRT, CUDA, CPU]]
    assert "enable_cuda_graph" not in _options(fake_ort.attempts[0], CUDA)
    assert engine.provider == TRT
    assert not engine.cuda_graphs
    assert engine.notes == [
        "cuda_graphs: off: TensorRT runs before CUDA (graphs need every node on CUDA)"
    ]


def test_cuda_graphs_hold_when_every_node_is_on_cuda(
    repo_root: Path, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    gpus(1)
    _fixed_cnn(repo_root, ", execution_providers: [cuda, cpu]")
    engine = _load(repo_root, "cnn")
    assert _options(fake_ort.created[0], CUDA) == {"device_id": 0, "enable_cuda_graph": True}
    assert engine.cuda_graphs
    assert engine.notes == []


def test_graph_capture_refused_is_caught_and_graphs_go_off(
    repo_root: Path, fake_ort: FakeOrt, gpus: GpuCount, caplog: pytest.LogCaptureFixture
) -> None:
    gpus(1)
    fake_ort.cpu_ops = {"GlobalAveragePool"}  # one node CUDA does not take
    _fixed_cnn(repo_root, ", execution_providers: [cuda, cpu]")
    with caplog.at_level(logging.WARNING, logger="edgetier.runtime"):
        engine = _load(repo_root, "cnn")
    refused, created = fake_ort.attempts
    assert refused.outcome == GRAPH_CAPTURE_REFUSED  # onnxruntime's Fail: no RuntimeError
    assert _options(created, CUDA) == {"device_id": 0}
    assert not engine.cuda_graphs
    assert engine.notes == [
        f"cuda_graphs: off: ONNX Runtime refused graph capture ({GRAPH_CAPTURE_REFUSED})"
    ]
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    assert engine.run({"x": x})["y"].shape == (2, 4)
    assert any("refused graph capture" in r.getMessage() for r in caplog.records)


def test_cuda_graphs_need_fixed_shapes(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    gpus(1)
    add_model(
        "cnn", "cnn", config="optimization: {cuda_graphs: true, execution_providers: [cuda]}\n"
    )
    engine = _load(repo_root, "cnn")
    assert "enable_cuda_graph" not in _options(fake_ort.created[0], CUDA)
    assert engine.notes == [
        "cuda_graphs: off: shapes are not fixed (max_batch_size > 0 or a -1 dim); graphs need them"
    ]


# -- 9. where nodes run; instances over every GPU ---------------------------------------


def test_provider_is_where_the_nodes_run(
    repo_root: Path,
    add_model: AddModel,
    fake_ort: FakeOrt,
    gpus: GpuCount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus(1)
    fake_ort.cpu_ops = {"Conv", "Relu", "GlobalAveragePool", "Flatten"}  # no CUDA kernels
    add_model("cnn", "cnn", config="optimization: {execution_providers: [cuda, cpu]}\n")
    with caplog.at_level(logging.WARNING, logger="edgetier.runtime"):
        engine = _load(repo_root, "cnn")
    assert fake_ort.created[0].providers == [CUDA, CPU]  # CUDA registered first ...
    assert engine.provider == CPU  # ... but most nodes run on the CPU
    assert engine.node_counts is not None
    assert engine.node_counts[CPU] > engine.node_counts[CUDA] >= 1
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("model 'cnn' instance 0: nodes run on more than one provider: ")
    assert f"1 on {CUDA}" in warning and "(off CPUExecutionProvider: Gemm)" in warning


@pytest.mark.parametrize(
    ("kind", "visible", "devices"),
    [
        ("KIND_GPU", None, [0, 0, 1, 1, 2, 2]),
        ("KIND_AUTO", None, [0, 0, 1, 1, 2, 2]),
        ("KIND_GPU", "2,0", [0, 0, 1, 1]),
        ("KIND_GPU", "", [0, 0]),  # no GPU visible: two instances, the providers fall back
    ],
)
def test_gpu_groups_without_gpus_spread_over_visible_gpus(
    repo_root: Path,
    add_model: AddModel,
    fake_ort: FakeOrt,
    gpus: GpuCount,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    visible: str | None,
    devices: list[int],
) -> None:
    gpus(3)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    add_model("cnn", "cnn", config=f"instance_group: [{{count: 2, kind: {kind}}}]\n")
    repo = ModelRepository(repo_root)
    engines = load_engines(repo.model_path("cnn", 1), repo.config("cnn"))
    assert [e.device_id for e in engines] == devices
    assert [_options(a, CUDA)["device_id"] for a in fake_ort.created] == devices


@pytest.mark.parametrize(
    ("available", "providers", "count"),
    [
        ([CPU], "[tensorrt, cuda, cpu]", 2),  # the CPU wheel on a GPU machine
        ([TRT, CUDA, CPU], "[cpu]", 2),  # a config that asks for the CPU
        ([TRT, CUDA, CPU], "[cuda, cpu]", 6),
    ],
)
def test_kind_auto_spreads_only_where_the_engine_can_use_gpus(
    repo_root: Path,
    add_model: AddModel,
    fake_ort: FakeOrt,
    gpus: GpuCount,
    available: list[str],
    providers: str,
    count: int,
) -> None:
    gpus(3)
    fake_ort.available = available
    config = f"instance_group: [{{count: 2}}]\noptimization: {{execution_providers: {providers}}}"
    add_model("cnn", "cnn", config=config + "\n")
    repo = ModelRepository(repo_root)
    assert len(load_engines(repo.model_path("cnn", 1), repo.config("cnn"))) == count


def test_a_gpu_id_the_node_lacks_is_a_load_error(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    gpus(2)
    add_model("cnn", "cnn", config="instance_group: [{count: 1, gpus: [1, 3]}]\n")
    with pytest.raises(
        ModelLoadError,
        match=r"instance_group\[0\]\.gpus: GPU 3 does not exist; this node has 2 GPUs",
    ):
        _load(repo_root, "cnn")
    assert fake_ort.attempts == []


def test_gpu_count_without_nvml_asks_cuda(
    gpus: GpuCount, monkeypatch: pytest.MonkeyPatch, fake_ort: FakeOrt
) -> None:
    from edgetier.runtime import _providers

    gpus(-1)  # NVML missing (older Jetsons)
    monkeypatch.setattr(_providers, "_cudart_count", lambda: 1)
    assert _providers.visible_gpu_count() == 1
    fake_ort.available = [CPU]  # and without the CUDA provider nothing is asked
    _providers.visible_gpu_count.cache_clear()
    assert _providers.visible_gpu_count() == 0


# -- issue 13.5: one line per node on a CPU-only node -----------------------------------


def test_cpu_only_node_says_once_which_provider_runs(
    repo_root: Path,
    add_model: AddModel,
    fake_ort: FakeOrt,
    gpus: GpuCount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus(0)
    fake_ort.available = ["AzureExecutionProvider", CPU]  # the CPU wheel
    for name in ("a", "b", "c"):
        add_model(name, "cnn", config="instance_group: [{count: 2}]\n")
    with caplog.at_level(logging.INFO, logger="edgetier.runtime"):
        for name in ("a", "b", "c"):
            repo = ModelRepository(repo_root)
            load_engines(repo.model_path(name, 1), repo.config(name))
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            logging.INFO,
            f"this node has no GPU: models run on {CPU} (this onnxruntime has "
            f"AzureExecutionProvider, {CPU})",
        )
    ]


def test_a_gpu_the_onnxruntime_cannot_use_is_a_warning_once(
    repo_root: Path,
    add_model: AddModel,
    fake_ort: FakeOrt,
    gpus: GpuCount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus(1)
    fake_ort.available = [CPU]  # a GPU, but the CPU wheel
    for name in ("a", "b"):
        add_model(name, "cnn")
    with caplog.at_level(logging.INFO, logger="edgetier.runtime"):
        for name in ("a", "b"):
            _load(repo_root, name)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            logging.WARNING,
            f"this node has 1 GPU but this onnxruntime lacks {TRT}, {CUDA} (it has {CPU}): "
            f"models run on {CPU}; install onnxruntime-gpu (not beside onnxruntime) to use "
            "the GPU",
        )
    ]


# -- issue 10, acceptance 2: Triton's instance groups -----------------------------------

FOUR_ON_TWO = "instance_group: [{count: 2, kind: KIND_GPU, gpus: [1, 3]}]\n"


def test_count_two_on_gpus_1_and_3_is_four_engines(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    gpus(4)
    add_model("cnn", "cnn", config=FOUR_ON_TWO)
    repo = ModelRepository(repo_root)
    engines = load_engines(repo.model_path("cnn", 1), repo.config("cnn"))
    assert len(engines) == 4
    assert [e.device_id for e in engines] == [1, 1, 3, 3]
    # what ONNX Runtime was told, provider by provider
    for provider in (TRT, CUDA):
        assert [_options(a, provider)["device_id"] for a in fake_ort.created] == [1, 1, 3, 3]


async def test_the_server_serves_four_engines_on_two_gpus(
    repo_root: Path, add_model: AddModel, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    from edgetier.server._manager import ModelManager

    gpus(4)
    add_model("cnn", "cnn", config=FOUR_ON_TWO)
    manager = ModelManager(ModelRepository(repo_root))
    await manager.start()
    try:
        version = manager.get("cnn")
        assert [e.device_id for e in version.engines] == [1, 1, 3, 3]
        assert version.batcher.options.instance_count == 4
        x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
        result = await version.batcher.submit({"x": x})
        assert result.outputs["y"].shape == (3, 4)
    finally:
        await manager.stop()
    # every engine bound its outputs to its own GPU when it ran
    assert len(fake_ort.created) == 4


async def test_the_pipeline_gets_one_engine_per_worker(
    make_cnn: Callable[..., Path], tmp_path: Path, fake_ort: FakeOrt, gpus: GpuCount
) -> None:
    from edgetier.pipeline._models import ModelInfo, ModelRunner

    gpus(2)
    path = make_cnn(tmp_path / "m.onnx")
    info = ModelInfo(path, "x", [-1, 3, 16, 16], ["y"], [[-1, 4]])

    class Stage:
        max_batch_size = 4
        max_queue_delay_us = 0
        instance_count = 2
        execution_providers = None
        intra_op_threads = 0

    runner = ModelRunner("m", info, Stage())
    assert [e.device_id for e in runner.engines] == [0, 0, 1, 1]  # two on each GPU
    assert runner.batcher.options.instance_count == 4
    assert runner.on_gpu
    await runner.batcher.start()
    try:
        out = await runner.infer(np.zeros((6, 3, 16, 16), np.float32))
        assert out["y"].shape == (6, 4)
    finally:
        await runner.stop()


def test_a_build_without_tensorrt_on_a_gpu_is_no_warning(
    repo_root: Path,
    add_model: AddModel,
    fake_ort: FakeOrt,
    gpus: GpuCount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus(1)
    fake_ort.available = [CUDA, CPU]
    add_model("cnn", "cnn")
    with caplog.at_level(logging.INFO, logger="edgetier.runtime"):
        engine = _load(repo_root, "cnn")
    assert engine.provider == CUDA
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"this onnxruntime lacks {TRT} (it has {CUDA}, {CPU}): models run on {CUDA}")
    ]

"""The LiteRT engine (platform litert_tflite) and the engine registry: a .tflite model
the test writes itself, config auto-completion from the file, batching by resizing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgetier.errors import ConfigError, MissingExtraError, ModelLoadError
from edgetier.runtime import (
    Engine,
    ModelRepository,
    config_for_file,
    known_platforms,
    load_engine,
    load_engines,
    parse_config,
    register_engine,
)
from edgetier.testing import make_tflite_mlp, tflite_mlp_reference


def test_repository_detects_the_platform_and_completes_the_config(repo_root: Path) -> None:
    weights = make_tflite_mlp(repo_root / "mlp" / "1" / "model.tflite")
    repo = ModelRepository(repo_root)
    config = repo.config("mlp")  # no config.yaml at all: everything from the file
    assert (config.platform, config.backend) == ("litert_tflite", "litert")
    assert config.default_model_filename == "model.tflite"
    assert config.max_batch_size == 8  # the file's first dimension is dynamic
    assert [(t.name, t.data_type, t.dims) for t in config.input] == [("x", "TYPE_FP32", [16])]
    assert [(t.name, t.data_type, t.dims) for t in config.output] == [("y", "TYPE_FP32", [4])]
    assert config.to_triton_json()["platform"] == "litert_tflite"
    (engine,) = load_engines(repo.model_path("mlp", 1), config)
    assert engine.provider == "LiteRT CPU"
    rng = np.random.default_rng(0)
    for rows in (3, 1, 8, 3):  # each size change resizes the interpreter's input
        x = rng.standard_normal((rows, 16)).astype(np.float32)
        y = engine.run({"x": x})["y"]
        np.testing.assert_allclose(y, tflite_mlp_reference(weights, x), rtol=1e-5, atol=1e-5)
    engine.close()


def test_config_given_is_checked_against_the_file(repo_root: Path) -> None:
    make_tflite_mlp(repo_root / "mlp" / "1" / "model.tflite")
    (repo_root / "mlp" / "config.yaml").write_text(
        "backend: litert\ninput: [{name: x, data_type: TYPE_FP32, dims: [15]}]\n"
    )
    with pytest.raises(ConfigError, match=r"input\[0\]\.dims: \[15\] does not fit .*\[16\]"):
        ModelRepository(repo_root).config("mlp")


def test_a_fixed_batch_file_does_not_batch(tmp_path: Path) -> None:
    path = tmp_path / "fixed.tflite"
    weights = make_tflite_mlp(path, batch=2)
    config = config_for_file(path, name="fixed")
    assert config.platform == "litert_tflite"
    assert config.max_batch_size == 0
    assert config.input[0].dims == [2, 16]
    x = np.ones((2, 16), np.float32)
    y = load_engine(path, config).run({"x": x})["y"]
    np.testing.assert_allclose(y, tflite_mlp_reference(weights, x), rtol=1e-5, atol=1e-5)


def test_several_instances_and_kind_gpu(tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    make_tflite_mlp(path)
    config = config_for_file(path, name="m", instance_group=[{"count": 3, "kind": "KIND_CPU"}])
    engines = load_engines(path, config)
    assert len(engines) == 3 and len({id(e) for e in engines}) == 3
    gpu = config_for_file(path, name="m", instance_group=[{"kind": "KIND_GPU", "gpus": [0]}])
    with pytest.raises(ModelLoadError, match=r"litert_tflite runs on the CPU; .*KIND_GPU"):
        load_engines(path, gpu)


def test_not_a_tflite_file(tmp_path: Path) -> None:
    path = tmp_path / "m" / "1" / "model.tflite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelLoadError, match="LiteRT cannot load it"):
        ModelRepository(tmp_path).config("m")


def test_platform_and_backend_must_agree() -> None:
    with pytest.raises(ConfigError, match="platform litert_tflite runs on backend litert"):
        parse_config({"platform": "litert_tflite", "backend": "onnxruntime"}, source="c", name="m")
    with pytest.raises(ConfigError, match="backend: must be one of onnxruntime, litert"):
        parse_config({"backend": "tensorflow"}, source="c", name="m")
    onnx = parse_config({}, source="c", name="m")
    assert (onnx.platform, onnx.backend, onnx.default_model_filename) == (
        "onnxruntime_onnx",
        "onnxruntime",
        "model.onnx",
    )


def test_missing_runtime_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.tflite"
    make_tflite_mlp(path)
    config = config_for_file(path, name="m")
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "edgetier.runtime._tflite", raising=False)
    with pytest.raises(MissingExtraError) as info:
        load_engines(path, config)
    assert str(info.value) == (
        "ai_edge_litert is not installed; install it with: pip install 'edgetier[tflite]'"
    )


class _Doubler(Engine):
    """A third party's engine: y = 2 x, from a text file holding the width."""

    platform = "double_txt"

    @classmethod
    def read_io(cls, path: Path):  # type: ignore[no-untyped-def]
        from edgetier.runtime import GraphTensor

        width = int(Path(path).read_text())
        return [GraphTensor("x", "TYPE_FP32", [-1, width])], [
            GraphTensor("y", "TYPE_FP32", [-1, width])
        ]

    @classmethod
    def load(cls, path, config, placement):  # type: ignore[no-untyped-def]
        engine = cls()
        engine.name, engine.path, engine.provider = config.name, path, "python"
        engine.device_id, engine.notes, engine.inputs, engine.outputs = 0, [], [], []
        return engine

    def run(self, inputs, output_names=None):  # type: ignore[no-untyped-def]
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        pass


def test_a_third_party_engine_is_one_class_and_one_registration(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgetier.runtime import _registry

    monkeypatch.setattr(_registry, "_ENGINES", dict(_registry._ENGINES))
    register_engine("double_txt", f"{__name__}._Doubler", backend="double", filename="model.txt")
    assert known_platforms()[-1] == "double_txt"
    (repo_root / "d" / "1").mkdir(parents=True)
    (repo_root / "d" / "1" / "model.txt").write_text("3")
    repo = ModelRepository(repo_root)
    config = repo.config("d")  # platform found from the file, dims from read_io
    assert (config.platform, config.backend, config.input[0].dims) == ("double_txt", "double", [3])
    (engine,) = load_engines(repo.model_path("d", 1), config)
    np.testing.assert_array_equal(engine.run({"x": np.ones((2, 3))})["y"], np.full((2, 3), 2.0))
    with pytest.raises(ConfigError, match="already registered"):
        register_engine("double_txt", "x.Y", backend="b", filename="model.b")

"""convert_fp16 and quantize_int8 add a new version whose outputs stay close to FP32."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from edgetier.errors import ConfigError, ModelLoadError, ModelNotFoundError
from edgetier.runtime import ModelRepository, convert_fp16, load_engine, quantize_int8

AddModel = Callable[..., Path]
CPU_ONLY = "instance_group: [{kind: KIND_CPU}]\n"


def _outputs(repo_root: Path, version: int, x: np.ndarray) -> np.ndarray:
    repo = ModelRepository(repo_root)
    engine = load_engine(repo.model_path("cnn", version), repo.config("cnn"))
    out: np.ndarray = engine.run({"x": x})["y"]
    return out


def _inputs(seed: int, n: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)


def _elem_types(path: Path) -> set[int]:
    model = onnx.load(str(path))
    return {init.data_type for init in model.graph.initializer}


def test_convert_fp16_adds_a_close_version(repo_root: Path, add_model: AddModel) -> None:
    model_dir = add_model("cnn", "cnn", config=CPU_ONLY)
    config_before = (model_dir / "config.yaml").read_text()
    steps: list[str] = []
    written = convert_fp16(model_dir, progress=lambda step, done, total: steps.append(step))
    assert (written.version, written.source, written.precision) == (2, 1, "fp16")
    assert written.path == model_dir / "2" / "model.onnx"
    assert steps[-1] == "done"
    assert (model_dir / "config.yaml").read_text() == config_before  # nothing else changes
    assert onnx.TensorProto.FLOAT16 in _elem_types(model_dir / "2" / "model.onnx")
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.yaml"]

    repo = ModelRepository(repo_root)
    assert repo.versions_to_load("cnn") == [2]
    config = repo.config("cnn")  # still FP32 at the edges: clients send FP32
    assert config.input[0].data_type == "TYPE_FP32"
    x = _inputs(1)
    reference, half = _outputs(repo_root, 1, x), _outputs(repo_root, 2, x)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, reference, rtol=1e-2, atol=1e-2 * np.abs(reference).max())


def test_convert_from_a_given_version(repo_root: Path, add_model: AddModel) -> None:
    model_dir = add_model("cnn", "cnn", versions=(1, 2), config=CPU_ONLY)
    assert convert_fp16(model_dir, from_version=1).version == 3
    with pytest.raises(ModelNotFoundError, match="no version 7"):
        convert_fp16(model_dir, from_version=7)


def _calibration_npy(directory: Path, count: int = 8) -> Path:
    directory.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        np.save(directory / f"{i:03}.npy", rng.random((3, 16, 16), dtype=np.float32))
    return directory


def test_quantize_int8_adds_a_close_qdq_version(
    repo_root: Path, add_model: AddModel, tmp_path: Path
) -> None:
    model_dir = add_model("cnn", "cnn", config=CPU_ONLY)
    calibration = _calibration_npy(tmp_path / "calib")
    seen: list[tuple[str, int, int]] = []
    written = quantize_int8(model_dir, calibration, progress=lambda s, d, t: seen.append((s, d, t)))
    assert (written.version, written.source, written.precision) == (2, 1, "int8")
    assert ("calibrating", 8, 8) in seen
    ops = {node.op_type for node in onnx.load(str(model_dir / "2" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = _inputs(2)
    reference, quantized = _outputs(repo_root, 1, x), _outputs(repo_root, 2, x)
    scale = np.abs(reference).max()
    assert np.abs(quantized - reference).max() < 0.1 * scale
    assert not np.array_equal(quantized, reference)  # it really is another graph


def test_quantize_with_npz_and_images(repo_root: Path, add_model: AddModel, tmp_path: Path) -> None:
    model_dir = add_model("cnn", "cnn", config=CPU_ONLY)
    rng = np.random.default_rng(3)
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    for i in range(4):
        np.savez(npz_dir / f"{i}.npz", x=rng.random((2, 3, 16, 16), dtype=np.float32))
    assert quantize_int8(model_dir, npz_dir, per_channel=True).version == 2

    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for i in range(3):
        pixels = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / f"{i}.png")
    assert quantize_int8(model_dir, image_dir, from_version=1, max_samples=2).version == 3
    x = _inputs(4)
    reference = _outputs(repo_root, 1, x)
    scale = np.abs(reference).max()
    assert np.abs(_outputs(repo_root, 3, x) - reference).max() < 0.1 * scale
    # Per-channel scales on this tiny Gemm are coarser (see quantize_int8), but still close.
    assert np.abs(_outputs(repo_root, 2, x) - reference).max() < 0.5 * scale


def test_calibration_errors(repo_root: Path, add_model: AddModel, tmp_path: Path) -> None:
    model_dir = add_model("cnn", "cnn", config=CPU_ONLY)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"holds no calibration file \(.npy, .npz"):
        quantize_int8(model_dir, empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "0.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ConfigError, match=r"0\.npy: input 'x' dimension 2 must be 16"):
        quantize_int8(model_dir, bad)
    keys = tmp_path / "keys"
    keys.mkdir()
    np.savez(keys / "0.npz", image=np.zeros((3, 16, 16), np.float32))
    with pytest.raises(ConfigError, match=r"keys \['image'\] do not match the model inputs"):
        quantize_int8(model_dir, keys)
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.yaml"]  # no debris


def test_quantize_after_convert_starts_from_fp32_and_loads(
    repo_root: Path, add_model: AddModel, tmp_path: Path
) -> None:
    model_dir = add_model("cnn", "cnn", config=CPU_ONLY)
    assert convert_fp16(model_dir).version == 2
    written = quantize_int8(model_dir, _calibration_npy(tmp_path / "calib"))
    # the newest version is FP16; INT8 starts from the newest FP32 one and says so
    assert (written.version, written.source, written.source_precision) == (3, 1, "fp32")
    x = _inputs(2)
    reference, quantized = _outputs(repo_root, 1, x), _outputs(repo_root, 3, x)
    assert np.abs(quantized - reference).max() < 0.1 * np.abs(reference).max()


def test_a_version_that_cannot_load_is_not_added(
    repo_root: Path, add_model: AddModel, tmp_path: Path
) -> None:
    model_dir = add_model("cnn", "cnn", config=CPU_ONLY)
    convert_fp16(model_dir)
    calibration = _calibration_npy(tmp_path / "calib")
    # told to start from the FP16 version: the quantizer writes FP16 scales, which ONNX
    # Runtime refuses; the tool says why and leaves no version behind
    with pytest.raises(ModelLoadError) as info:
        quantize_int8(model_dir, calibration, from_version=2)
    message = str(info.value)
    assert message.startswith(
        f"version 3 was not added to {model_dir}: the new model does not load"
    )
    assert "INVALID_GRAPH" in message and "float16" in message
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.yaml"]


def test_no_fp32_version_to_quantize(repo_root: Path, add_model: AddModel, tmp_path: Path) -> None:
    model_dir = add_model("cnn", "cnn", config=CPU_ONLY)
    convert_fp16(model_dir)
    shutil.rmtree(model_dir / "1")
    with pytest.raises(
        ModelLoadError, match=r"no FP32 version to start from \(versions: 2 \(fp16\)\)"
    ):
        quantize_int8(model_dir, _calibration_npy(tmp_path / "calib"))

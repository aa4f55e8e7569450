"""Repository tools that add a new version in another precision: FP16 and INT8 (QDQ).

    convert_fp16(Path("models/resnet50")).version                  # 2 (the new version)
    quantize_int8(Path("models/resnet50"), Path("calib/")).source  # 1: the newest FP32 one

The new version is written beside the others (next integer) and nothing else changes;
clients keep sending FP32, since graph inputs and outputs keep their types. A version is
only added once it loads, on the CPU, with the model's own config: a tool whose output
would not load fails with the reason and leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from edgetier.errors import ConfigError, EdgeTierError, ModelLoadError, ModelNotFoundError
from edgetier.runtime._autocomplete import GraphTensor, read_graph_io
from edgetier.runtime._datatypes import to_numpy_dtype

__all__ = [
    "CALIBRATION_SUFFIXES",
    "NewVersion",
    "Progress",
    "convert_fp16",
    "load_calibration",
    "precision_of",
    "quantize_int8",
]

Precision = Literal["fp32", "fp16", "int8"]

Progress = Callable[[str, int, int], None]
"""progress(step, done, total): total is 0 when unknown."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CALIBRATION_SUFFIXES = (".npy", ".npz", *IMAGE_SUFFIXES)
_MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class NewVersion:
    """A version a tool added: its number and file, and the version it started from."""

    version: int
    path: Path
    precision: Precision
    source: int
    source_precision: Precision


_QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeLinear",
    }
)


def precision_of(model: onnx.ModelProto) -> Precision:
    """What a graph computes in: int8 (quantized ops), fp16 (FP16 weights), else fp32."""
    graph = model.graph
    if any(node.op_type in _QUANTIZED_OPS for node in graph.node):
        return "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if any(init.data_type == fp16 for init in graph.initializer):
        return "fp16"
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute):
            return "fp16"
    return "fp32"


def _precision_of_file(path: Path) -> Precision:
    try:
        return precision_of(onnx.load(str(path), load_external_data=False))
    except Exception:
        return "fp32"  # unreadable: _load says why when it is the one chosen


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        raise ModelNotFoundError(f"{model_dir} is not a model directory")
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _source(
    model_dir: Path, from_version: int | None, *, fp32_only: bool = False
) -> tuple[Path, int, int]:
    """The model file to start from, its version and the number of the version to write.

    Without ``from_version``: the latest version, or with ``fp32_only`` the newest FP32
    one (INT8 calibrates FP32 activations; quantizing an FP16 graph writes FP16 scales,
    which ONNX Runtime refuses to load).
    """
    versions = _versions(model_dir)
    if not versions:
        raise ModelLoadError(f"{model_dir} has no version: expected {model_dir}/1/{_MODEL_FILE}")
    if from_version is not None:
        version = from_version
    elif fp32_only:
        found = {v: _precision_of_file(model_dir / str(v) / _MODEL_FILE) for v in versions}
        fp32 = [v for v, p in found.items() if p == "fp32"]
        if not fp32:
            listed = ", ".join(f"{v} ({p})" for v, p in found.items())
            raise ModelLoadError(
                f"{model_dir} has no FP32 version to start from (versions: {listed}); "
                "name one with --from-version"
            )
        version = fp32[-1]
    else:
        version = versions[-1]
    if version not in versions:
        raise ModelNotFoundError(
            f"--from-version: {model_dir} has no version {version}; versions: {versions}"
        )
    source = model_dir / str(version) / _MODEL_FILE
    if not source.is_file():
        raise ModelLoadError(f"{source} does not exist")
    return source, version, versions[-1] + 1


def _write_version(model_dir: Path, version: int, write: Callable[[Path], None]) -> Path:
    """Write <model_dir>/<version>/model.onnx atomically: a poller never sees half a version.

    The file is loaded once, on the CPU with the model's config, before the version
    appears; one that does not load is removed and the reason raised.
    """
    final = model_dir / str(version)
    if final.exists():
        raise ConfigError(f"{final} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir))
    try:
        write(staging / _MODEL_FILE)
        _check_loads(model_dir, staging / _MODEL_FILE, version)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final / _MODEL_FILE


def _check_loads(model_dir: Path, path: Path, version: int) -> None:
    """Load ``path`` as the server would load the model's next version (on the CPU)."""
    from edgetier.runtime._autocomplete import complete_config
    from edgetier.runtime._config import InstanceGroup, load_config_file, parse_config
    from edgetier.runtime._engine import load_engine

    config_file = model_dir / "config.yaml"
    source = str(config_file)
    try:
        if config_file.is_file():
            raw = load_config_file(config_file, name=model_dir.name)
        else:
            raw = parse_config({}, source=source, name=model_dir.name)
        raw = raw.model_copy(update={"instance_group": [InstanceGroup(kind="KIND_CPU")]})
        engine = load_engine(path, complete_config(raw, path, source=source))
        engine.close()
    except EdgeTierError as exc:
        raise ModelLoadError(
            f"version {version} was not added to {model_dir}: the new model does not load: "
            f"{exc.message}"
        ) from None


def _load(source: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(source))
    except Exception as exc:
        raise ModelLoadError(f"{source}: not a valid ONNX model: {exc}") from None


def convert_fp16(
    model_dir: Path, *, from_version: int | None = None, progress: Progress | None = None
) -> NewVersion:
    """Write a new version whose graph computes in FP16 (inputs/outputs stay FP32).

    Starts from the latest version unless ``from_version``; returns what was written.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model_dir = Path(model_dir)
    source, source_version, version = _source(model_dir, from_version)
    source_precision = _precision_of_file(source)
    _step(progress, f"reading {source}", 0, 3)
    model = _load(source)
    _step(progress, "converting to FP16", 1, 3)
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)

    def write(path: Path) -> None:
        _step(progress, f"writing version {version}", 2, 3)
        onnx.save(converted, str(path))

    path = _write_version(model_dir, version, write)
    _step(progress, "done", 3, 3)
    return NewVersion(version, path, "fp16", source_version, source_precision)


def quantize_int8(
    model_dir: Path,
    calibration_dir: Path,
    *,
    from_version: int | None = None,
    per_channel: bool = False,
    max_samples: int | None = None,
    progress: Progress | None = None,
) -> NewVersion:
    """Write a new version with static INT8 quantization in QDQ format.

    Activations and weights are symmetric INT8 (what TensorRT's explicit quantization
    wants; ONNX Runtime's CPU provider runs it too). Weight scales are per tensor unless
    ``per_channel``: per-channel Gemm weights lost accuracy in ONNX Runtime 1.32's
    quantizer on the test models. Starts from the newest FP32 version unless
    ``from_version``; returns what was written.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model_dir = Path(model_dir)
    source, source_version, version = _source(model_dir, from_version, fp32_only=True)
    source_precision = _precision_of_file(source)
    _step(progress, f"from version {source_version} ({source_precision.upper()})", 0, 0)
    inputs, _ = read_graph_io(source)
    samples = load_calibration(Path(calibration_dir), inputs, max_samples=max_samples)
    reader = _Reader(samples, progress)

    def write(path: Path) -> None:
        quantize_static(
            str(source),
            str(path),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )

    _step(progress, "calibrating", 0, len(samples))
    path = _write_version(model_dir, version, write)
    _step(progress, "done", len(samples), len(samples))
    return NewVersion(version, path, "int8", source_version, source_precision)


def _step(progress: Progress | None, step: str, done: int, total: int) -> None:
    if progress is not None:
        progress(step, done, total)


# -- calibration data ----------------------------------------------------------------


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over prepared samples."""

    def __init__(self, samples: list[dict[str, np.ndarray]], progress: Progress | None) -> None:
        self._samples = samples
        self._progress = progress
        self._iter: Iterator[dict[str, np.ndarray]] = iter(samples)
        self._done = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._iter, None)
        if sample is not None:
            self._done += 1
            _step(self._progress, "calibrating", self._done, len(self._samples))
        return sample

    def rewind(self) -> None:
        self._iter = iter(self._samples)
        self._done = 0

    def __len__(self) -> int:
        return len(self._samples)


def load_calibration(
    directory: Path, inputs: list[GraphTensor], *, max_samples: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Read calibration samples for a graph's inputs from ``directory``, sorted by name.

    - ``.npz``: one sample per file, keyed by input name (or ``arr_0``, ``arr_1``... in
      input order);
    - ``.npy``: one array per file, for single-input models;
    - images (.png, .jpg, .bmp, .webp): RGB, resized to the input's H and W, scaled to
      [0, 1], for single-input image models (NCHW or NHWC).

    An array without the batch dimension gets one.
    """
    if not directory.is_dir():
        raise ConfigError(f"--calibration: {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in CALIBRATION_SUFFIXES)
    if max_samples is not None:
        files = files[:max_samples]
    if not files:
        raise ConfigError(
            f"--calibration: {directory} holds no calibration file "
            f"({', '.join(CALIBRATION_SUFFIXES)})"
        )
    return [_sample(path, inputs) for path in files]


def _sample(path: Path, inputs: list[GraphTensor]) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        names = [t.name for t in inputs]
        if set(names) <= set(arrays):
            raw = {n: arrays[n] for n in names}
        elif all(f"arr_{i}" in arrays for i in range(len(names))):
            raw = {n: arrays[f"arr_{i}"] for i, n in enumerate(names)}
        else:
            raise ConfigError(
                f"{path}: keys {sorted(arrays)} do not match the model inputs {names} "
                "(use the input names, or arr_0, arr_1, ... in input order)"
            )
    else:
        if len(inputs) != 1:
            raise ConfigError(
                f"{path}: the model has {len(inputs)} inputs; use .npz files keyed by input name"
            )
        array = np.load(path, allow_pickle=False) if suffix == ".npy" else _image(path, inputs[0])
        raw = {inputs[0].name: array}
    return {t.name: _fit(path, t, raw[t.name]) for t in inputs}


def _fit(path: Path, tensor: GraphTensor, array: Any) -> np.ndarray:
    array = np.asarray(array)
    shape = tensor.shape
    if shape is not None and array.ndim == len(shape) - 1:
        array = array[np.newaxis]
    if shape is not None and array.ndim != len(shape):
        raise ConfigError(
            f"{path}: input {tensor.name!r} needs {len(shape)} dimensions {shape}, "
            f"got shape {list(array.shape)}"
        )
    if shape is not None:
        for i, (want, got) in enumerate(zip(shape, array.shape, strict=True)):
            if want != -1 and want != got:
                raise ConfigError(
                    f"{path}: input {tensor.name!r} dimension {i} must be {want}, "
                    f"got shape {list(array.shape)}"
                )
    return np.ascontiguousarray(array, dtype=to_numpy_dtype(tensor.data_type))


def _image(path: Path, tensor: GraphTensor) -> np.ndarray:
    from PIL import Image

    shape = tensor.shape
    if shape is None or len(shape) != 4:
        raise ConfigError(
            f"{path}: images calibrate 4-D image inputs only; input {tensor.name!r} "
            f"has shape {shape}"
        )
    channels_first = shape[1] in (1, 3)
    channels, height, width = (shape[1:4]) if channels_first else (shape[3], shape[1], shape[2])
    if height < 1 or width < 1:
        raise ConfigError(
            f"{path}: input {tensor.name!r} has dynamic height/width {shape}; "
            "save calibration samples as .npy instead"
        )
    with Image.open(path) as image:
        mode = "L" if channels == 1 else "RGB"
        pixels = np.asarray(image.convert(mode).resize((width, height)), dtype=np.float32)
    pixels /= 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    return pixels.transpose(2, 0, 1) if channels_first else pixels

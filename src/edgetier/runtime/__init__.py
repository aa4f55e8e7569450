"""Model repository, model config and engines (ONNX Runtime; LiteRT with ``[tflite]``).

Usage::

    repo = ModelRepository(Path("models"))
    engines = load_engines(repo.model_path("resnet50", 1), repo.config("resnet50"))
    outputs = engines[0].run({"input": np.zeros((1, 3, 224, 224), np.float32)})
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgetier._lazy import lazy_names
from edgetier.runtime._autocomplete import config_for_file
from edgetier.runtime._config import (
    DEFAULT_MAX_BATCH_SIZE,
    DynamicBatchingConfig,
    InstanceGroup,
    ModelConfig,
    OptimizationConfig,
    TensorConfig,
    VersionPolicy,
    load_config_file,
    parse_config,
)
from edgetier.runtime._datatypes import (
    DATATYPES,
    datatype_of,
    element_size,
    onnx_elem_type,
    to_numpy_dtype,
    triton_name,
)
from edgetier.runtime._engine import (
    Engine,
    GraphTensor,
    Placement,
    TensorSpec,
    load_engine,
    load_engines,
    placements,
)
from edgetier.runtime._precision import NewVersion, convert_fp16, quantize_int8
from edgetier.runtime._providers import (
    GPU_PROVIDERS,
    PROVIDER_NAMES,
    ProviderKey,
    visible_gpu_count,
)
from edgetier.runtime._registry import known_platforms, register_engine
from edgetier.runtime._repository import ModelRepository

if TYPE_CHECKING:
    from edgetier.runtime._onnx import OnnxEngine

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_BATCH_SIZE",
    "GPU_PROVIDERS",
    "PROVIDER_NAMES",
    "DynamicBatchingConfig",
    "Engine",
    "GraphTensor",
    "InstanceGroup",
    "ModelConfig",
    "ModelRepository",
    "NewVersion",
    "OnnxEngine",
    "OptimizationConfig",
    "Placement",
    "ProviderKey",
    "TensorConfig",
    "TensorSpec",
    "VersionPolicy",
    "config_for_file",
    "convert_fp16",
    "datatype_of",
    "element_size",
    "known_platforms",
    "load_config_file",
    "load_engine",
    "load_engines",
    "onnx_elem_type",
    "parse_config",
    "placements",
    "quantize_int8",
    "register_engine",
    "to_numpy_dtype",
    "triton_name",
    "visible_gpu_count",
]

# OnnxEngine is imported on first use: it brings onnxruntime
__getattr__, __dir__ = lazy_names(__name__, {"OnnxEngine": "_onnx"}, __all__)

"""Model repository, model config and ONNX Runtime engines.

Usage::

    repo = ModelRepository(Path("models"))
    engine = load_engine(repo.model_path("resnet50", 1), repo.config("resnet50"))
    outputs = engine.run({"input": np.zeros((1, 3, 224, 224), np.float32)})
"""

from __future__ import annotations

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
    to_numpy_dtype,
    triton_name,
)
from edgetier.runtime._demo import (
    DEMO_MODELS,
    build_demo_repository,
    make_identity,
    make_resnet50,
    make_simple,
    make_small,
)
from edgetier.runtime._engine import Engine, OnnxEngine, TensorSpec, load_engine
from edgetier.runtime._precision import convert_fp16, quantize_int8
from edgetier.runtime._repository import ModelRepository

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEMO_MODELS",
    "DynamicBatchingConfig",
    "Engine",
    "InstanceGroup",
    "ModelConfig",
    "ModelRepository",
    "OnnxEngine",
    "OptimizationConfig",
    "TensorConfig",
    "TensorSpec",
    "VersionPolicy",
    "build_demo_repository",
    "config_for_file",
    "convert_fp16",
    "datatype_of",
    "element_size",
    "load_config_file",
    "load_engine",
    "make_identity",
    "make_resnet50",
    "make_simple",
    "make_small",
    "parse_config",
    "quantize_int8",
    "to_numpy_dtype",
    "triton_name",
]

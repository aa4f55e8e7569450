"""The model configuration schema: Triton's field names, EdgeTier's defaults.

A model's ``config.yaml`` is validated by :class:`ModelConfig`; unknown fields are refused
and every error names the file, the field path and what is allowed::

    config = load_config_file(Path("models/resnet50/config.yaml"))
    config.full_shape(config.input[0])      # [-1, 3, 224, 224]
    config.to_triton_json()                 # what Triton's GET /v2/models/m/config returns
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from edgetier.config import ConfigModel, FieldError, read_yaml, validate
from edgetier.errors import ConfigError
from edgetier.runtime._datatypes import DATATYPES, triton_name
from edgetier.runtime._providers import PROVIDER_KEYS, ProviderKey
from edgetier.runtime._registry import (
    DEFAULT_PLATFORM,
    engine_entry,
    known_platforms,
    platform_for_backend,
)

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DynamicBatchingConfig",
    "InstanceGroup",
    "ModelConfig",
    "OptimizationConfig",
    "TensorConfig",
    "VersionPolicy",
    "load_config_file",
    "parse_config",
]

DEFAULT_MAX_BATCH_SIZE = 8
"""max_batch_size given to a model whose config does not say and whose graph can batch."""

DEFAULT_MAX_QUEUE_SIZE = 1024
"""EdgeTier bounds every queue unless told otherwise (Triton's default is unbounded)."""

DEFAULT_MAX_QUEUE_WAIT_US = 1_000_000
"""Admission budget: a request whose estimated queue wait is longer is refused at once."""

TRITON_DATATYPES: tuple[str, ...] = tuple(triton_name(dt) for dt in DATATYPES)
"""The data_type values a config may use: TYPE_BOOL ... TYPE_STRING (Triton's spelling)."""


class _Strict(ConfigModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class TensorConfig(_Strict):
    """One input or output: name, Triton data_type and dims (without the batch dim)."""

    name: str = Field(min_length=1)
    data_type: str
    dims: list[int]

    @field_validator("data_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value == "TYPE_BYTES":  # the KServe name, accepted for convenience
            value = "TYPE_STRING"
        if value not in TRITON_DATATYPES:
            raise ValueError(f"must be one of {', '.join(TRITON_DATATYPES)}")
        return value

    @field_validator("dims")
    @classmethod
    def _valid_dims(cls, value: list[int]) -> list[int]:
        for dim in value:
            if dim == 0 or dim < -1:
                raise ValueError(f"each dim must be -1 (dynamic) or >= 1, got {dim}")
        return value

    @property
    def datatype(self) -> str:
        """The KServe v2 spelling of data_type: "FP32", "BYTES"."""
        name = self.data_type.removeprefix("TYPE_")
        return "BYTES" if name == "STRING" else name


class DynamicBatchingConfig(_Strict):
    """Triton's dynamic_batching; max_queue_size and default_timeout_microseconds are flat.

    Triton keeps those two under ``default_queue_policy``; that spelling is accepted too.
    """

    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    preferred_batch_size: list[int] = Field(default_factory=list)
    max_queue_size: int = Field(default=DEFAULT_MAX_QUEUE_SIZE, ge=0)
    default_timeout_microseconds: int = Field(default=0, ge=0)
    priority_levels: int = Field(default=0, ge=0)
    default_priority_level: int = Field(default=0, ge=0)
    max_queue_wait_microseconds: int = Field(default=DEFAULT_MAX_QUEUE_WAIT_US, ge=0)
    """EdgeTier's admission budget: refuse a request (503 / UNAVAILABLE with a retry hint)
    when its estimated wait in the queue is longer; 0 = admit while the queue has room."""

    @model_validator(mode="before")
    @classmethod
    def _lift_queue_policy(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "default_queue_policy" not in data:
            return data
        data = dict(data)
        policy = data.pop("default_queue_policy") or {}
        if not isinstance(policy, dict):
            raise FieldError("default_queue_policy", "must be a mapping")
        allowed = {
            "max_queue_size",
            "default_timeout_microseconds",
            "timeout_action",
            "allow_timeout_override",
        }
        for key, value in policy.items():
            if key not in allowed:
                raise FieldError(
                    f"default_queue_policy.{key}",
                    f"unknown field; allowed: {', '.join(sorted(allowed))}",
                )
            if key == "timeout_action":
                if value != "REJECT":
                    raise FieldError(
                        "default_queue_policy.timeout_action",
                        f"only REJECT is supported, got {value!r}",
                    )
            elif key == "allow_timeout_override":
                continue  # EdgeTier always honours a request's own timeout
            elif key in data:
                raise FieldError(
                    key, "given twice: both here and under default_queue_policy; keep one"
                )
            else:
                data[key] = value
        return data

    @field_validator("preferred_batch_size")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        for size in value:
            if size < 1:
                raise ValueError(f"each size must be >= 1, got {size}")
        return value

    @model_validator(mode="after")
    def _priority_range(self) -> DynamicBatchingConfig:
        if self.default_priority_level > self.priority_levels:
            raise FieldError(
                "default_priority_level",
                f"must be <= priority_levels ({self.priority_levels}), "
                f"got {self.default_priority_level}",
            )
        if self.priority_levels and self.default_priority_level == 0:
            # 0 means "the lowest level" so that priority_levels alone is a valid config.
            self.default_priority_level = self.priority_levels
        return self


class InstanceGroup(_Strict):
    """How many copies of the model run in parallel, and where."""

    count: int = Field(default=1, ge=1)
    kind: Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"] = "KIND_AUTO"
    gpus: list[int] = Field(default_factory=list)
    name: str | None = None

    @field_validator("gpus")
    @classmethod
    def _gpu_ids(cls, value: list[int]) -> list[int]:
        for gpu in value:
            if gpu < 0:
                raise ValueError(f"each GPU id must be >= 0, got {gpu}")
        return value

    @model_validator(mode="after")
    def _cpu_has_no_gpus(self) -> InstanceGroup:
        if self.kind == "KIND_CPU" and self.gpus:
            raise FieldError("gpus", f"must be empty for kind KIND_CPU, got {self.gpus}")
        return self


class LatestPolicy(_Strict):
    """Serve the newest num_versions versions."""

    num_versions: int = Field(default=1, ge=1)


class AllPolicy(_Strict):
    """Serve every version on disk."""


class SpecificPolicy(_Strict):
    """Serve exactly these versions."""

    versions: list[int] = Field(min_length=1)

    @field_validator("versions")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        for version in value:
            if version < 1:
                raise ValueError(f"each version must be >= 1, got {version}")
        return value


class VersionPolicy(_Strict):
    """Which versions to serve: exactly one of latest, all, specific (as Triton)."""

    latest: LatestPolicy | None = None
    all: AllPolicy | None = None
    specific: SpecificPolicy | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        given = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of latest, all, specific, got "
                + (", ".join(given) if given else "none")
            )
        return self


def _latest_one() -> VersionPolicy:
    return VersionPolicy(latest=LatestPolicy(num_versions=1))


Provider = ProviderKey


def _default_providers() -> list[Provider]:
    return list(PROVIDER_KEYS)


class OptimizationConfig(_Strict):
    """How the engine runs: precision, execution providers in order, caches, threads."""

    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    execution_providers: list[Provider] = Field(
        default_factory=lambda: _default_providers(), min_length=1
    )
    engine_cache_dir: str | None = None
    cuda_graphs: bool = False
    intra_op_threads: int = Field(default=0, ge=0)
    inter_op_threads: int = Field(default=0, ge=0)
    io_binding: bool = True

    @field_validator("execution_providers")
    @classmethod
    def _unique(cls, value: list[Provider]) -> list[Provider]:
        seen: set[str] = set()
        for provider in value:
            if provider in seen:
                raise ValueError(f"{provider!r} is listed twice")
            seen.add(provider)
        return value


class ModelConfig(_Strict):
    """A model's configuration, with Triton's field names.

    ``input`` and ``output`` may be left empty in the file: the repository completes them
    from the ONNX graph, as Triton's auto-complete does.
    """

    name: str = Field(min_length=1)
    platform: str = DEFAULT_PLATFORM
    backend: str = "onnxruntime"
    max_batch_size: int = Field(default=0, ge=0)
    input: list[TensorConfig] = Field(default_factory=list)
    output: list[TensorConfig] = Field(default_factory=list)
    dynamic_batching: DynamicBatchingConfig | None = None
    instance_group: list[InstanceGroup] = Field(
        default_factory=lambda: [InstanceGroup()], min_length=1
    )
    version_policy: VersionPolicy = Field(default_factory=_latest_one)
    optimization: OptimizationConfig = Field(default_factory=lambda: OptimizationConfig())
    default_model_filename: str = Field(default="model.onnx", min_length=1)
    parameters: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _engine_fields(cls, data: Any) -> Any:
        """platform, backend and default_model_filename follow from each other (Triton)."""
        if not isinstance(data, dict):
            return data
        platform, backend = data.get("platform"), data.get("backend")
        if not isinstance(platform, str | None) or not isinstance(backend, str | None):
            return data  # the field validators say what is wrong
        if platform is None and backend is None:
            return data  # the defaults: ONNX Runtime
        if platform is None:
            assert backend is not None
            platform = platform_for_backend(backend)
            if platform is None:
                raise FieldError("backend", _engine_choices("backend", backend))
            data = {**data, "platform": platform}
        if platform not in known_platforms():
            raise FieldError("platform", _engine_choices("platform", platform))
        entry = engine_entry(platform)
        if backend is None:
            data = {**data, "backend": entry.backend}
        elif backend != entry.backend:
            raise FieldError(
                "backend", f"platform {platform} runs on backend {entry.backend}, got {backend!r}"
            )
        if "default_model_filename" not in data:
            data = {**data, "default_model_filename": entry.filename}
        return data

    @model_validator(mode="after")
    def _cross_field(self) -> ModelConfig:
        for field in ("input", "output"):
            seen: set[str] = set()
            for i, tensor in enumerate(getattr(self, field)):
                if tensor.name in seen:
                    raise FieldError(f"{field}[{i}].name", f"{tensor.name!r} is used twice")
                seen.add(tensor.name)
        batching = self.dynamic_batching
        if batching is not None:
            for i, size in enumerate(batching.preferred_batch_size):
                if size > self.max_batch_size:
                    raise FieldError(
                        f"dynamic_batching.preferred_batch_size[{i}]",
                        f"must be <= max_batch_size ({self.max_batch_size}), got {size}",
                    )
        if "/" in self.default_model_filename or self.default_model_filename.startswith("."):
            raise FieldError(
                "default_model_filename",
                f"must be a plain file name, got {self.default_model_filename!r}",
            )
        return self

    @property
    def instance_count(self) -> int:
        """Instances the config names: ``count`` per listed GPU, as Triton.

        A GPU group without ``gpus`` puts ``count`` on every visible GPU, which only the
        node knows: ``edgetier.runtime.placements(config)`` gives the instances there.
        """
        return sum(group.count * max(1, len(group.gpus)) for group in self.instance_group)

    def full_shape(self, tensor: TensorConfig) -> list[int]:
        """The tensor's shape as the graph sees it: ``[-1, *dims]`` when the model batches."""
        return [-1, *tensor.dims] if self.max_batch_size > 0 else list(tensor.dims)

    def to_triton_json(self) -> dict[str, Any]:
        """Triton's model-config JSON layout (what GET /v2/models/<m>/config returns).

        The result parses into Triton's ``ModelConfig`` protobuf with
        ``google.protobuf.json_format.ParseDict``.
        """
        return _triton_json(self)


def _engine_choices(field: str, value: str) -> str:
    allowed = [getattr(engine_entry(p), field) for p in known_platforms()]
    return f"must be one of {', '.join(allowed)} (the registered engines), got {value!r}"


def _tensor_json(tensor: TensorConfig, *, is_input: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": tensor.name,
        "data_type": tensor.data_type,
        "dims": list(tensor.dims),
        "is_shape_tensor": False,
    }
    if is_input:
        out.update(format="FORMAT_NONE", allow_ragged_batch=False, optional=False)
    else:
        out["label_filename"] = ""
    return out


def _triton_json(config: ModelConfig) -> dict[str, Any]:
    opt = config.optimization
    policy = config.version_policy
    if policy.latest is not None:
        version_policy: dict[str, Any] = {"latest": {"num_versions": policy.latest.num_versions}}
    elif policy.specific is not None:
        version_policy = {"specific": {"versions": list(policy.specific.versions)}}
    else:
        version_policy = {"all": {}}

    gpu_accelerators: list[dict[str, Any]] = []
    if "tensorrt" in opt.execution_providers:
        trt: dict[str, str] = {"precision_mode": opt.precision.upper()}
        if opt.engine_cache_dir:
            trt.update(trt_engine_cache_enable="true", trt_engine_cache_path=opt.engine_cache_dir)
        gpu_accelerators.append({"name": "tensorrt", "parameters": trt})

    parameters = {key: {"string_value": value} for key, value in config.parameters.items()}
    if opt.intra_op_threads:
        parameters["intra_op_thread_count"] = {"string_value": str(opt.intra_op_threads)}
    if opt.inter_op_threads:
        parameters["inter_op_thread_count"] = {"string_value": str(opt.inter_op_threads)}

    out: dict[str, Any] = {
        "name": config.name,
        "platform": config.platform,
        "backend": config.backend,
        "version_policy": version_policy,
        "max_batch_size": config.max_batch_size,
        "input": [_tensor_json(t, is_input=True) for t in config.input],
        "output": [_tensor_json(t, is_input=False) for t in config.output],
        "batch_input": [],
        "batch_output": [],
        "optimization": {
            "priority": "PRIORITY_DEFAULT",
            "cuda": {"graphs": opt.cuda_graphs},
            "execution_accelerators": {
                "gpu_execution_accelerator": gpu_accelerators,
                "cpu_execution_accelerator": [],
            },
            "input_pinned_memory": {"enable": True},
            "output_pinned_memory": {"enable": True},
        },
        "instance_group": [
            {
                "name": group.name or f"{config.name}_{i}",
                "kind": group.kind,
                "count": group.count,
                "gpus": list(group.gpus),
                "secondary_devices": [],
                "profile": [],
                "passive": False,
                "host_policy": "",
            }
            for i, group in enumerate(config.instance_group)
        ],
        "default_model_filename": config.default_model_filename,
        "cc_model_filenames": {},
        "metric_tags": {},
        "parameters": parameters,
        "model_warmup": [],
    }
    batching = config.dynamic_batching
    if batching is not None:
        out["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_size),
            "max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
            "preserve_ordering": False,
            "priority_levels": batching.priority_levels,
            "default_priority_level": batching.default_priority_level,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": batching.default_timeout_microseconds,
                "allow_timeout_override": True,
                "max_queue_size": batching.max_queue_size,
            },
            "priority_queue_policy": {},
        }
    return out


# -- loading --------------------------------------------------------------------------


def parse_config(data: Any, *, source: str, name: str | None = None) -> ModelConfig:
    """Validate a config mapping; errors are ConfigError naming ``source`` and the field.

    ``name`` fills in the model name when the mapping has none (the directory name).
    """
    if data is None:
        data = {}
    if isinstance(data, dict) and name is not None:
        given = data.get("name")
        if given is not None and given != name:
            raise ConfigError(
                f"{source}: name: must match the model directory {name!r}, got {given!r}"
            )
        data = {**data, "name": name}
    return validate(ModelConfig, data, source=source, what="model config")


def load_config_file(path: Path, *, name: str | None = None) -> ModelConfig:
    """Read and validate one config.yaml (no auto-complete: that needs the graph).

    Without ``name`` and without a ``name`` field, the model is named after the directory.
    """
    data = read_yaml(Path(path), what="model config")
    if name is None and isinstance(data, dict) and "name" not in data:
        data = {**data, "name": Path(path).resolve().parent.name}
    return parse_config(data, source=str(path), name=name)

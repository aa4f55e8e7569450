"""The config schema: Triton field names, unknown fields refused, errors naming file+field."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from edgetier.errors import ConfigError
from edgetier.runtime import ModelConfig, load_config_file, parse_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "resnet50" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path, name="resnet50")
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    return message.removeprefix(str(path) + ": ")


def test_full_triton_style_config_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
max_batch_size: 8
input: [{name: input, data_type: TYPE_FP32, dims: [3, 224, 224]}]
output: [{name: output, data_type: TYPE_STRING, dims: [-1]}]
dynamic_batching:
  max_queue_delay_microseconds: 2000
  preferred_batch_size: [4, 8]
  priority_levels: 3
  default_priority_level: 2
instance_group: [{count: 2, kind: KIND_GPU, gpus: [0, 1]}]
version_policy: {specific: {versions: [1, 3]}}
optimization: {precision: fp16, execution_providers: [cuda, cpu], engine_cache_dir: trt}
""",
    )
    config = load_config_file(path, name="resnet50")
    assert config.name == "resnet50"
    assert config.full_shape(config.input[0]) == [-1, 3, 224, 224]
    assert config.output[0].datatype == "BYTES"
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.preferred_batch_size == [4, 8]
    assert config.dynamic_batching.max_queue_size == 1024  # EdgeTier's bounded default
    assert config.instance_count == 4  # Triton: count per listed GPU
    assert config.version_policy.specific is not None
    assert config.version_policy.specific.versions == [1, 3]
    assert config.optimization.precision == "fp16"


def test_defaults() -> None:
    config = ModelConfig(name="m")
    assert config.dynamic_batching is None
    assert config.version_policy.latest is not None
    assert config.version_policy.latest.num_versions == 1
    assert config.optimization.execution_providers == ["tensorrt", "cuda", "cpu"]
    assert config.instance_count == 1


def test_negative_delay_names_file_field_and_limit(tmp_path: Path) -> None:
    message = _error(tmp_path, "dynamic_batching: {max_queue_delay_microseconds: -5}\n")
    assert message == "dynamic_batching.max_queue_delay_microseconds: must be >= 0, got -5"


def test_unknown_field_lists_allowed_fields(tmp_path: Path) -> None:
    message = _error(tmp_path, "dynamic_batching: {max_queue_delay_ms: 5}\n")
    assert message.startswith("dynamic_batching.max_queue_delay_ms: unknown field; allowed: ")
    assert "max_queue_delay_microseconds" in message


def test_unknown_top_level_field(tmp_path: Path) -> None:
    message = _error(tmp_path, "max_batch: 8\n")
    assert message.startswith("max_batch: unknown field; allowed: name, platform")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_batch_size: -1\n", "max_batch_size: must be >= 0, got -1"),
        ("max_batch_size: eight\n", "max_batch_size: must be an integer, got 'eight'"),
        (
            "input: [{name: x, data_type: TYPE_FLOAT, dims: [3]}]\n",
            "input[0].data_type: must be one of TYPE_BOOL",
        ),
        (
            "input: [{name: x, data_type: TYPE_FP32, dims: [3, 0]}]\n",
            "input[0].dims: each dim must be -1 (dynamic) or >= 1, got 0",
        ),
        ("input: [{name: x, dims: [3]}]\n", "input[0].data_type: required field is missing"),
        (
            "instance_group: [{kind: KIND_TPU}]\n",
            "instance_group[0].kind: must be one of 'KIND_AUTO', 'KIND_CPU' or 'KIND_GPU'",
        ),
        ("instance_group: [{count: 0}]\n", "instance_group[0].count: must be >= 1, got 0"),
        (
            "instance_group: [{kind: KIND_CPU, gpus: [0]}]\n",
            "instance_group[0].gpus: must be empty for kind KIND_CPU, got [0]",
        ),
        (
            "optimization: {precision: fp8}\n",
            "optimization.precision: must be one of 'fp32', 'fp16' or 'int8', got 'fp8'",
        ),
        (
            "optimization: {execution_providers: [cuda, cuda]}\n",
            "optimization.execution_providers: 'cuda' is listed twice",
        ),
        (
            "version_policy: {latest: {num_versions: 0}}\n",
            "version_policy.latest.num_versions: must be >= 1, got 0",
        ),
        (
            "version_policy: {latest: {num_versions: 1}, all: {}}\n",
            "version_policy: give exactly one of latest, all, specific, got latest, all",
        ),
        (
            "version_policy: {specific: {versions: [0]}}\n",
            "version_policy.specific.versions: each version must be >= 1, got 0",
        ),
        (
            "platform: tensorflow_savedmodel\n",
            "platform: must be one of onnxruntime_onnx, litert_tflite (the registered engines), "
            "got 'tensorflow_savedmodel'",
        ),
    ],
)
def test_bad_values(tmp_path: Path, text: str, expected: str) -> None:
    assert _error(tmp_path, text).startswith(expected)


def test_preferred_batch_size_over_max_batch_size(tmp_path: Path) -> None:
    message = _error(
        tmp_path, "max_batch_size: 8\ndynamic_batching: {preferred_batch_size: [4, 16]}\n"
    )
    assert message == (
        "dynamic_batching.preferred_batch_size[1]: must be <= max_batch_size (8), got 16"
    )


def test_default_priority_level_over_priority_levels(tmp_path: Path) -> None:
    message = _error(
        tmp_path, "dynamic_batching: {priority_levels: 2, default_priority_level: 3}\n"
    )
    assert message == (
        "dynamic_batching.default_priority_level: must be <= priority_levels (2), got 3"
    )


def test_default_priority_level_zero_means_lowest() -> None:
    config = parse_config({"dynamic_batching": {"priority_levels": 3}}, source="x", name="m")
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.default_priority_level == 3


def test_duplicate_tensor_names(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        "input: [{name: a, data_type: TYPE_FP32, dims: [1]},"
        " {name: a, data_type: TYPE_FP32, dims: [1]}]\n",
    )
    assert message == "input[1].name: 'a' is used twice"


def test_triton_default_queue_policy_spelling_is_accepted(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "dynamic_batching:\n  default_queue_policy:\n"
        "    {max_queue_size: 0, default_timeout_microseconds: 500, timeout_action: REJECT}\n",
    )
    batching = load_config_file(path, name="resnet50").dynamic_batching
    assert batching is not None
    assert (batching.max_queue_size, batching.default_timeout_microseconds) == (0, 500)


def test_queue_policy_delay_action_is_refused(tmp_path: Path) -> None:
    message = _error(
        tmp_path, "dynamic_batching: {default_queue_policy: {timeout_action: DELAY}}\n"
    )
    assert message == (
        "dynamic_batching.default_queue_policy.timeout_action: only REJECT is supported, "
        "got 'DELAY'"
    )


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    message = _error(tmp_path, "max_batch_size: [8\n")
    assert message.startswith("invalid YAML: ")
    assert "line" in message


def test_config_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert (
        _error(tmp_path, "- 1\n- 2\n") == "the model config must be a mapping of fields, got a list"
    )


def test_name_must_match_directory(tmp_path: Path) -> None:
    message = _error(tmp_path, "name: resnet\n")
    assert message == "name: must match the model directory 'resnet50', got 'resnet'"


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    message = _error(tmp_path, "max_batch_size: -1\nfoo: 1\n")
    lines = message.split("\n")
    assert lines[0] == "2 errors in the model config"
    assert len(lines) == 3
    assert any("config.yaml: foo: unknown field" in line for line in lines)
    assert any("config.yaml: max_batch_size: must be >= 0, got -1" in line for line in lines)


def test_to_triton_json_is_tritons_layout() -> None:
    config = parse_config(
        {
            "max_batch_size": 8,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}],
            "output": [{"name": "y", "data_type": "TYPE_STRING", "dims": [-1]}],
            "dynamic_batching": {"max_queue_delay_microseconds": 100, "max_queue_size": 7},
            "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
            "optimization": {"precision": "fp16", "intra_op_threads": 2},
        },
        source="x",
        name="m",
    )
    data = config.to_triton_json()
    assert data["name"] == "m"
    assert data["backend"] == "onnxruntime"
    assert data["input"][0]["dims"] == [3]
    assert data["output"][0]["data_type"] == "TYPE_STRING"
    assert data["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 7
    assert data["instance_group"][0] == {
        "name": "m_0",
        "kind": "KIND_CPU",
        "count": 2,
        "gpus": [],
        "secondary_devices": [],
        "profile": [],
        "passive": False,
        "host_policy": "",
    }
    accelerators = data["optimization"]["execution_accelerators"]["gpu_execution_accelerator"]
    assert accelerators[0]["parameters"]["precision_mode"] == "FP16"
    # Every key is a real field of Triton's ModelConfig protobuf.
    proto = json_format.ParseDict(data, model_config_pb2.ModelConfig())
    assert proto.max_batch_size == 8
    assert proto.dynamic_batching.max_queue_delay_microseconds == 100
    assert proto.parameters["intra_op_thread_count"].string_value == "2"

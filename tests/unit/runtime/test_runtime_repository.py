"""ModelRepository: models, versions, version policies, auto-complete, fingerprints."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edgetier.errors import ConfigError, ModelLoadError, ModelNotFoundError
from edgetier.runtime import DEFAULT_MAX_BATCH_SIZE, ModelRepository

AddModel = Callable[..., Path]


def test_models_and_versions(repo_root: Path, add_model: AddModel) -> None:
    add_model("b", versions=(1, 3, 10))
    add_model("a")
    (repo_root / "b" / "notes").mkdir()  # not a version: ignored
    (repo_root / "README.md").write_text("not a model")
    repo = ModelRepository(repo_root)
    assert repo.models() == ["a", "b"]
    assert repo.versions("b") == [1, 3, 10]
    assert repo.versions_to_load("b") == [10]  # default policy: latest 1
    assert repo.model_path("b", 3) == repo_root / "b" / "3" / "model.onnx"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("latest: {num_versions: 2}", [3, 10]),
        ("latest: {num_versions: 9}", [1, 3, 10]),
        ("all: {}", [1, 3, 10]),
        ("specific: {versions: [3, 1]}", [1, 3]),
    ],
)
def test_version_policies(
    repo_root: Path, add_model: AddModel, policy: str, expected: list[int]
) -> None:
    add_model("m", versions=(1, 3, 10), config=f"version_policy: {{{policy}}}\n")
    assert ModelRepository(repo_root).versions_to_load("m") == expected


def test_specific_version_missing_on_disk(repo_root: Path, add_model: AddModel) -> None:
    add_model("m", versions=(1,), config="version_policy: {specific: {versions: [1, 4]}}\n")
    with pytest.raises(ModelLoadError, match=r"asks for \[4\].*versions on disk: \[1\]"):
        ModelRepository(repo_root).versions_to_load("m")


def test_model_without_version(repo_root: Path) -> None:
    (repo_root / "empty").mkdir()
    repo = ModelRepository(repo_root)
    with pytest.raises(ModelLoadError, match=r"model 'empty' has no version: expected .*1"):
        repo.config("empty")


def test_unknown_model_and_version(repo_root: Path, add_model: AddModel) -> None:
    add_model("m")
    repo = ModelRepository(repo_root)
    with pytest.raises(ModelNotFoundError, match=r"'nope' is not in the repository.*models: m"):
        repo.config("nope")
    with pytest.raises(ModelNotFoundError):
        repo.versions("../m")
    with pytest.raises(ModelNotFoundError, match="no version 2; versions on disk: \\[1\\]"):
        repo.model_path("m", 2)


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        ModelRepository(tmp_path / "absent").models()


def test_autocomplete_batching_model(repo_root: Path, add_model: AddModel) -> None:
    add_model("simple", "simple")
    config = ModelRepository(repo_root).config("simple")
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert [(t.name, t.data_type, t.dims) for t in config.input] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_INT32", [16]),
    ]
    assert [t.name for t in config.output] == ["OUTPUT0", "OUTPUT1"]


def test_autocomplete_fixed_batch_gives_max_batch_size_zero(
    repo_root: Path, make_cnn: Callable[..., Path]
) -> None:
    make_cnn(repo_root / "fixed" / "1" / "model.onnx", batch=1)
    config = ModelRepository(repo_root).config("fixed")
    assert config.max_batch_size == 0
    assert config.input[0].dims == [1, 3, 16, 16]
    assert config.full_shape(config.input[0]) == [1, 3, 16, 16]


def test_partial_config_is_completed(repo_root: Path, add_model: AddModel) -> None:
    add_model("small", config="max_batch_size: 4\ndynamic_batching: {}\n")
    config = ModelRepository(repo_root).config("small")
    assert config.max_batch_size == 4
    assert config.dynamic_batching is not None
    assert [(t.name, t.dims) for t in config.input] == [("input", [16])]
    assert [(t.name, t.dims) for t in config.output] == [("output", [4])]


def test_config_may_fix_a_dynamic_dim(repo_root: Path, add_model: AddModel) -> None:
    add_model("identity", "identity", config="input: " + _identity_inputs(dims="[5]") + "\n")
    config = ModelRepository(repo_root).config("identity")
    assert config.input[0].dims == [5]


def _identity_inputs(dims: str) -> str:
    from edgetier.runtime import DATATYPES, triton_name

    items = [f"{{name: IN_{dt}, data_type: {triton_name(dt)}, dims: {dims}}}" for dt in DATATYPES]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "input: [{name: data, data_type: TYPE_FP32, dims: [16]}]\n",
            r"input\[0\]\.name: the graph has no input 'data'; it has 'input'",
        ),
        (
            "input: [{name: input, data_type: TYPE_FP16, dims: [16]}]\n",
            r"input\[0\]\.data_type: the graph has TYPE_FP32 for 'input', config says TYPE_FP16",
        ),
        (
            "input: [{name: input, data_type: TYPE_FP32, dims: [8]}]\n",
            r"input\[0\]\.dims: \[8\] does not fit the graph's \[16\]",
        ),
        (
            "max_batch_size: 0\ninput: [{name: input, data_type: TYPE_FP32, dims: [16]}]\n",
            r"input\[0\]\.dims: \[16\] does not fit the graph's \[-1, 16\]",
        ),
        (
            "output: [{name: output, data_type: TYPE_FP32, dims: [4, 1]}]\n",
            r"output\[0\]\.dims: \[4, 1\] does not fit",
        ),
    ],
)
def test_config_that_disagrees_with_graph(
    repo_root: Path, add_model: AddModel, config: str, expected: str
) -> None:
    add_model("small", config=config)
    with pytest.raises(ConfigError, match=expected) as info:
        ModelRepository(repo_root).config("small")
    assert str(info.value).startswith(str(repo_root / "small" / "config.yaml"))


def test_missing_graph_input_is_reported(repo_root: Path, add_model: AddModel) -> None:
    add_model(
        "simple", "simple", config="input: [{name: INPUT0, data_type: TYPE_INT32, dims: [16]}]\n"
    )
    with pytest.raises(ConfigError, match="the graph also needs 'INPUT1'"):
        ModelRepository(repo_root).config("simple")


def test_batching_on_a_fixed_batch_graph_is_refused(
    repo_root: Path, make_cnn: Callable[..., Path]
) -> None:
    make_cnn(repo_root / "fixed" / "1" / "model.onnx", batch=1)
    (repo_root / "fixed" / "config.yaml").write_text("max_batch_size: 8\n")
    with pytest.raises(ConfigError, match="max_batch_size: 8 needs a dynamic first dimension"):
        ModelRepository(repo_root).config("fixed")


def test_corrupt_model_file_is_a_load_error(repo_root: Path) -> None:
    (repo_root / "bad" / "1").mkdir(parents=True)
    (repo_root / "bad" / "1" / "model.onnx").write_bytes(b"\x00not onnx at all")
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        ModelRepository(repo_root).config("bad")


def test_fingerprint_changes_and_config_is_reread(repo_root: Path, add_model: AddModel) -> None:
    model_dir = add_model("small", config="max_batch_size: 4\n")
    repo = ModelRepository(repo_root)
    before = repo.fingerprint("small")
    assert repo.config("small").max_batch_size == 4
    assert repo.fingerprint("small") == before  # reading changes nothing

    config_file = model_dir / "config.yaml"
    config_file.write_text("max_batch_size: 2\n")
    stat = config_file.stat()
    os.utime(config_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert repo.fingerprint("small") != before
    assert repo.config("small").max_batch_size == 2

    after_config = repo.fingerprint("small")
    add_model("small", versions=(2,))
    assert repo.fingerprint("small") != after_config
    assert repo.versions_to_load("small") == [2]

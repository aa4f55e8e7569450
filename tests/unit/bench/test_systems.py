"""What every compared system gets: the model's own config, the server's engine options, and
options given on top; the repository EdgeTier serves and the raw worker's engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgetier.bench import ServerSettings, served_model
from edgetier.bench._raw_worker import load
from edgetier.bench._systems import peer_options
from edgetier.bench.peers._common import parser
from edgetier.errors import ConfigError
from edgetier.runtime import ModelRepository

SPIN = "session.intra_op.allow_spinning"


@pytest.fixture
def repo(tiny_model: Path, tmp_path: Path) -> Path:
    """A repository whose model `tiny` has its own batch size and queue delay, two versions."""
    root = tmp_path / "repo"
    for version in (1, 3):
        (root / "tiny" / str(version)).mkdir(parents=True)
        (root / "tiny" / str(version) / "model.onnx").write_bytes(tiny_model.read_bytes())
    config = {
        "max_batch_size": 4,
        "dynamic_batching": {"max_queue_delay_microseconds": 1000},
        "optimization": {"intra_op_threads": 1},
    }
    (root / "tiny" / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def test_repository_folder_takes_its_config(repo: Path, tmp_path: Path) -> None:
    served = served_model(str(repo / "tiny"), ServerSettings(), tmp_path / "cache")
    assert served.file == repo / "tiny" / "3" / "model.onnx" and served.version == 3
    assert (served.max_batch_size, served.dynamic_batching, served.max_queue_delay_us) == (
        4,
        True,
        1000,
    )
    assert (served.intra_op_threads, served.intra_op_spinning, served.provider) == (1, False, "cpu")
    assert served.sources == {
        "max_batch_size": "config.yaml",
        "dynamic_batching": "config.yaml",
        "max_queue_delay_us": "config.yaml",
        "intra_op_threads": "config.yaml",
        "inter_op_threads": "server default",
        "intra_op_spinning": "server default",
        "provider": "server default",
    }
    settings = served.settings()
    assert settings["config"] == str(repo / "tiny" / "config.yaml")
    assert settings["max_batch_size"] == {"value": 4, "from": "config.yaml"}
    assert settings["intra_op_spinning"] == {"value": False, "from": "server default"}
    text = served.describe()
    assert "max batch size 4 (config.yaml)" in text
    assert "max queue delay 1000 us (config.yaml)" in text
    assert "intra-op spinning off (server default)" in text


def test_version_file_inside_a_repository_takes_the_config_too(repo: Path, tmp_path: Path) -> None:
    served = served_model(str(repo / "tiny" / "1" / "model.onnx"), ServerSettings(), tmp_path)
    assert (served.name, served.version, served.max_batch_size) == ("tiny", 1, 4)


def test_options_override_single_values(repo: Path, tmp_path: Path) -> None:
    options = ServerSettings(max_batch_size=8, intra_op_spinning=True, max_queue_delay_us=0)
    served = served_model(str(repo / "tiny"), options, tmp_path)
    assert (served.max_batch_size, served.max_queue_delay_us, served.intra_op_spinning) == (
        8,
        0,
        True,
    )
    assert served.intra_op_threads == 1  # not given: still the config's
    assert served.sources["max_batch_size"] == "option"
    assert served.sources["intra_op_threads"] == "config.yaml"
    assert "intra-op spinning on (option)" in served.describe()


def test_no_dynamic_batching_and_no_batch_dimension(repo: Path, tmp_path: Path) -> None:
    off = served_model(str(repo / "tiny"), ServerSettings(dynamic_batching=False), tmp_path)
    assert not off.dynamic_batching and "dynamic batching off (option)" in off.describe()
    flat = served_model(str(repo / "tiny"), ServerSettings(max_batch_size=0), tmp_path)
    assert flat.max_batch_size == 0 and not flat.dynamic_batching
    assert flat.config.input[0].dims == [-1, 16]  # the batch dim is now part of dims


def test_bare_file_gets_server_engine_options(tiny_model: Path, tmp_path: Path) -> None:
    served = served_model(str(tiny_model), ServerSettings(), tmp_path)
    assert (served.name, served.version) == ("tiny", None)
    assert (served.max_batch_size, served.max_queue_delay_us) == (8, 2000)
    assert not served.intra_op_spinning and served.intra_op_threads == 0
    assert served.sources["max_queue_delay_us"] == "bench default"
    assert served.sources["intra_op_spinning"] == "server default"
    assert "no config.yaml" in served.origin


def test_demo_name_uses_the_demo_config(tmp_path: Path) -> None:
    served = served_model("small", ServerSettings(), tmp_path / "cache")
    assert served.origin == str(tmp_path / "cache" / "small" / "config.yaml")
    assert served.max_batch_size == 8 and not served.dynamic_batching


def test_option_that_breaks_the_config_names_the_field(repo: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((repo / "tiny" / "config.yaml").read_text())
    config["dynamic_batching"]["preferred_batch_size"] = [4]
    (repo / "tiny" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"preferred_batch_size\[0\].*max_batch_size \(2\)"):
        served_model(str(repo / "tiny"), ServerSettings(max_batch_size=2), tmp_path)


def test_bad_option_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="provider must be one of cpu, cuda, tensorrt"):
        ServerSettings(provider="gpu")
    with pytest.raises(ConfigError, match="max_batch_size must be >= 0, got -1"):
        ServerSettings(max_batch_size=-1)


def test_unknown_model_spec(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ONNX file, a repository model folder or a demo"):
        served_model("nope", ServerSettings(), tmp_path)


@pytest.mark.parametrize(("spinning", "expected"), [(None, "0"), (True, "1"), (False, "0")])
def test_served_repository_and_raw_engine_share_session_options(
    repo: Path, tmp_path: Path, spinning: bool | None, expected: str
) -> None:
    served = served_model(str(repo / "tiny"), ServerSettings(intra_op_spinning=spinning), tmp_path)
    root = served.write_repository(tmp_path / "served")
    config = ModelRepository(root).config("tiny")
    assert config == served.config.model_copy(update={"version_policy": config.version_policy})
    engine, specs, batched = load(root, "tiny")
    try:
        options = engine._session.get_session_options()
        assert options.get_session_config_entry(SPIN) == expected
        assert options.intra_op_num_threads == 1
        assert engine.provider == "CPUExecutionProvider"
        assert batched and specs[0].shape == (-1, 16)
    finally:
        engine.close()


@pytest.mark.parametrize("spinning", [None, True])
def test_peers_get_the_same_settings(repo: Path, tmp_path: Path, spinning: bool | None) -> None:
    served = served_model(str(repo / "tiny"), ServerSettings(intra_op_spinning=spinning), tmp_path)
    args = parser("peer").parse_args([*peer_options(served), "--http-port", "1"])
    assert (args.name, args.max_batch_size, args.max_queue_delay_us) == ("tiny", 4, 1000)
    assert (args.intra_op_threads, args.dynamic_batching, args.provider) == (1, 1, "cpu")
    assert args.intra_op_spinning == (1 if spinning else 0)

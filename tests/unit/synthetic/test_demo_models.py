"""The demo repository: the models interfaces promise, runnable, rebuilt only when stale."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edgetier.errors import ConfigError
from edgetier.runtime import DATATYPES, ModelRepository, load_engine
from edgetier.synthetic import DEMO_MODELS, build_demo_repository

LIGHT = ["simple", "small", "identity"]


def test_light_demo_models(tmp_path: Path) -> None:
    built = build_demo_repository(tmp_path, models=LIGHT)
    assert built == dict.fromkeys(LIGHT, True)
    repo = ModelRepository(tmp_path)
    assert repo.models() == sorted(LIGHT)

    simple = repo.config("simple")
    assert simple.max_batch_size == 8
    assert [(t.name, t.datatype, simple.full_shape(t)) for t in simple.input] == [
        ("INPUT0", "INT32", [-1, 16]),
        ("INPUT1", "INT32", [-1, 16]),
    ]
    small = repo.config("small")
    assert [small.full_shape(t) for t in (*small.input, *small.output)] == [[-1, 16], [-1, 4]]
    identity = repo.config("identity")
    assert [t.name for t in identity.input] == [f"IN_{dt}" for dt in DATATYPES]
    assert all(identity.full_shape(t) == [-1, -1] for t in identity.output)

    engine = load_engine(repo.model_path("small", 1), small)
    out = engine.run({"input": np.ones((3, 16), np.float32)})["output"]
    assert out.shape == (3, 4)
    assert np.isfinite(out).all()


def test_up_to_date_models_are_kept(tmp_path: Path) -> None:
    build_demo_repository(tmp_path, models=["small"])
    model_file = tmp_path / "small" / "1" / "model.onnx"
    mtime = model_file.stat().st_mtime_ns
    calls: list[tuple[str, bool]] = []
    result = build_demo_repository(
        tmp_path, models=["small"], progress=lambda name, rebuilt: calls.append((name, rebuilt))
    )
    assert result == {"small": False}
    assert calls == [("small", False)]
    assert model_file.stat().st_mtime_ns == mtime
    # A model file changed by hand is rebuilt; so is one when forced.
    model_file.write_bytes(b"edited")
    assert build_demo_repository(tmp_path, models=["small"]) == {"small": True}
    assert build_demo_repository(tmp_path, models=["small"], force=True) == {"small": True}


def test_same_seed_same_weights(tmp_path: Path) -> None:
    build_demo_repository(tmp_path / "a", models=["small"])
    build_demo_repository(tmp_path / "b", models=["small"])
    a = (tmp_path / "a" / "small" / "1" / "model.onnx").read_bytes()
    assert a == (tmp_path / "b" / "small" / "1" / "model.onnx").read_bytes()


def test_unknown_demo_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown demo model.*bert.*allowed: resnet50"):
        build_demo_repository(tmp_path, models=["bert"])


def test_demo_models_list() -> None:
    assert DEMO_MODELS == ("resnet50", "simple", "small", "identity")


@pytest.mark.slow
def test_resnet50(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build_demo_repository(tmp_path, models=["resnet50"])
    repo = ModelRepository(tmp_path)
    config = repo.config("resnet50")
    assert config.max_batch_size == 8
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.full_shape(config.input[0]) == [-1, 3, 224, 224]
    assert config.full_shape(config.output[0]) == [-1, 1000]

    import onnx

    model = onnx.load(str(repo.model_path("resnet50", 1)), load_external_data=False)
    assert model.opset_import[0].version == 17
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Conv") == 53  # stem + 16 blocks x 3 + 4 projection shortcuts
    assert ops.count("Add") == 16
    params = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    assert 25_000_000 < params < 26_000_000  # ResNet-50 with folded batch-norm

    with caplog.at_level(logging.WARNING):
        engine = load_engine(repo.model_path("resnet50", 1), config)
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    logits = engine.run({"input": x})["output"]
    assert logits.shape == (2, 1000)
    assert np.isfinite(logits).all()
    assert np.abs(logits).max() < 1e3  # stays within FP16 range

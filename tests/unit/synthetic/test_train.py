"""Training pieces: assignment, letterbox parity, config checks, a tiny end-to-end build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edgetier.errors import ConfigError
from edgetier.synthetic._scene import CLASS_NAMES, COLOUR_NAMES, SceneConfig

torch = pytest.importorskip("torch")

from edgetier.synthetic._train import (  # noqa: E402
    ModelCard,
    TrainConfig,
    assign,
    build_models,
)


def test_train_config_checks_sizes_and_steps() -> None:
    with pytest.raises(ConfigError, match="input_hw sides must be multiples of 32 >= 64, got 100"):
        TrainConfig(input_hw=(100, 640))
    with pytest.raises(ConfigError, match="detector_steps must be >= 1, got 0"):
        TrainConfig(detector_steps=0)
    with pytest.raises(ConfigError, match="crop_hw must fit in input_hw"):
        TrainConfig(input_hw=(128, 128), crop_hw=(256, 128))


def test_training_frames_go_through_the_pipelines_letterbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training and serving cannot drift apart: the batches are the pipeline's letterbox
    output, and the boxes move with the placement it reports."""
    from dataclasses import replace

    from edgetier.pipeline import Letterboxer, LetterboxInfo
    from edgetier.synthetic import _train

    seen: list[tuple[np.ndarray, LetterboxInfo]] = []

    class Spy(Letterboxer):
        def __call__(self, image: np.ndarray, out: np.ndarray) -> LetterboxInfo:
            info = super().__call__(image, out)
            seen.append((out.copy(), info))
            return info

    monkeypatch.setattr(_train, "Letterboxer", Spy)
    config = replace(TrainConfig.tiny(), crop_hw=None)
    images, boxes, _ = next(_train.detector_batches(np.random.default_rng(0), config))
    assert len(seen) == config.batch_size
    for b, (out, info) in enumerate(seen):
        assert np.array_equal(images[b], out)
        if len(boxes[b]):
            assert boxes[b][:, 0].min() >= info.pad_x - 1e-3
            assert boxes[b][:, 1].min() >= info.pad_y - 1e-3


def test_assignment_picks_cells_inside_on_the_right_level() -> None:
    from edgetier.synthetic._nets import grid_points

    levels = [torch.zeros(1, 7, 8, 8), torch.zeros(1, 7, 4, 4)]  # a 64x64 input
    points, strides = grid_points(levels)
    small = [10.0, 10.0, 30.0, 20.0]  # longer side 20 -> stride 8
    big = [0.0, 0.0, 64.0, 60.0]  # longer side 64... on the edge: still stride 8
    huge = [0.0, 0.0, 64.0, 64.0 + 1.0]  # longer side 65 -> stride 16
    idx, pos = assign(points, strides, torch.tensor([small, huge]))
    assert pos.any()
    for a in torch.nonzero(pos).flatten():
        x, y = points[a].tolist()
        stride = float(strides[a])
        if int(idx[a]) == 0:
            assert stride == 8 and 10 <= x <= 30 and 10 - 4 <= y <= 20 + 4
        else:
            assert stride == 16
    # where boxes compete for a cell, the smaller one wins
    idx2, pos2 = assign(points, strides, torch.tensor([big, small]))
    centre_cell = int(torch.argmin(((points - torch.tensor([20.0, 15.0])) ** 2).sum(1)))
    assert pos2[centre_cell] and int(idx2[centre_cell]) == 1
    none_idx, none_pos = assign(points, strides, torch.zeros((0, 4)))
    assert not none_pos.any() and bool((none_idx == -1).all())


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    return build_models(out, TrainConfig.tiny(), progress=lambda _msg: None)


@pytest.mark.slow
def test_tiny_build_exports_yolov8_layout_and_probs(tiny_models: dict[str, Path]) -> None:
    import onnx
    import onnxruntime as ort

    det, col = tiny_models["detector"], tiny_models["colour"]
    card = ModelCard.model_validate(yaml.safe_load(det.with_suffix(".yaml").read_text()))
    assert card.names == list(CLASS_NAMES) and card.layout == "yolov8"
    h, w = card.input_size
    anchors = sum((h // s) * (w // s) for s in card.strides or [])
    graph = onnx.load(str(det)).graph
    dims = [d.dim_value or d.dim_param for d in graph.output[0].type.tensor_type.shape.dim]
    assert graph.input[0].name == "images" and graph.output[0].name == "output0"
    assert dims == ["batch", 4 + len(CLASS_NAMES), anchors]
    session = ort.InferenceSession(str(det), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((3, 3, h, w), dtype=np.float32)
    (out,) = session.run(None, {"images": x})
    assert out.shape == (3, 4 + len(CLASS_NAMES), anchors)
    assert np.all(out[:, 2:4] >= 0)  # widths and heights
    assert np.all((out[:, 4:] >= 0) & (out[:, 4:] <= 1))  # scores

    card = ModelCard.model_validate(yaml.safe_load(col.with_suffix(".yaml").read_text()))
    assert card.names == list(COLOUR_NAMES) and card.input_size == (64, 64)
    session = ort.InferenceSession(str(col), providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probs"], {"images": np.random.rand(5, 3, 64, 64).astype(np.float32)})
    assert probs.shape == (5, len(COLOUR_NAMES))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_quality_runs_end_to_end_on_a_tiny_model(tiny_models: dict[str, Path]) -> None:
    from edgetier.synthetic._quality import evaluate

    scene = SceneConfig(width=320, height=180, fps=10.0, duration_s=1.0, seed=1_000_001)
    result = evaluate(tiny_models["detector"], [scene], progress=False)
    assert result["frames"] == 10
    assert set(result["detection"]["ap50"]) == set(CLASS_NAMES)
    assert 0.0 <= result["detection"]["map50"] <= 1.0
    assert {"vehicle", "pedestrian", "OVERALL"} <= set(result["tracking"])

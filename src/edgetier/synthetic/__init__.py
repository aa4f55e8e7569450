"""Tools outside the running path: the demo models (made here, random weights, nothing
downloaded), synthetic road scenes with exact ground truth, the training of the shipped
pipeline models on them, and their quality evaluation.

    scene = SyntheticScene(SceneConfig(duration_s=5.0, seed=7))
    write_video(scene, Path("road.mp4"))
    python -m edgetier.synthetic train --out build/models --tiny

The scene generator needs OpenCV (the ``video`` extra); training needs torch (``train``).
The pipeline's ``synthetic`` source calls the generator; nothing else of the running node
imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgetier._lazy import lazy_names
from edgetier.synthetic._config import DEFAULT_LINES, SceneConfig

if TYPE_CHECKING:
    from edgetier.synthetic._demo import (
        DEMO_MODELS,
        build_demo_repository,
        make_identity,
        make_resnet50,
        make_simple,
        make_small,
    )
    from edgetier.synthetic._quality import evaluate, held_out_scenes
    from edgetier.synthetic._scene import (
        CLASS_NAMES,
        COLOUR_NAMES,
        Crossing,
        GroundTruth,
        SyntheticFrame,
        SyntheticScene,
        line_crossings,
        write_video,
    )
    from edgetier.synthetic._train import ModelCard, TrainConfig, build_models

__all__ = [
    "CLASS_NAMES",
    "COLOUR_NAMES",
    "DEFAULT_LINES",
    "DEMO_MODELS",
    "Crossing",
    "GroundTruth",
    "ModelCard",
    "SceneConfig",
    "SyntheticFrame",
    "SyntheticScene",
    "TrainConfig",
    "build_demo_repository",
    "build_models",
    "evaluate",
    "held_out_scenes",
    "line_crossings",
    "make_identity",
    "make_resnet50",
    "make_simple",
    "make_small",
    "write_video",
]

_WHERE = {
    "DEMO_MODELS": "_demo",
    "build_demo_repository": "_demo",
    "make_identity": "_demo",
    "make_resnet50": "_demo",
    "make_simple": "_demo",
    "make_small": "_demo",
    "CLASS_NAMES": "_scene",
    "COLOUR_NAMES": "_scene",
    "Crossing": "_scene",
    "GroundTruth": "_scene",
    "SyntheticFrame": "_scene",
    "SyntheticScene": "_scene",
    "line_crossings": "_scene",
    "write_video": "_scene",
    "ModelCard": "_train",
    "TrainConfig": "_train",
    "build_models": "_train",
    "evaluate": "_quality",
    "held_out_scenes": "_quality",
}


__getattr__, __dir__ = lazy_names(__name__, _WHERE, __all__)

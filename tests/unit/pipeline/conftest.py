"""Shared fixtures of the pipeline tests: small random ONNX models in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetier.pipeline._testing import make_random_classifier, make_random_detector


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    make_random_detector(tmp_path / "det.onnx")
    make_random_classifier(tmp_path / "cls.onnx")
    return tmp_path

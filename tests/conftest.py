"""Suite-wide test setup: the shared fixtures of ``edgetier.testing``, and `gpu` tests
that skip themselves where no NVIDIA GPU is usable."""

from __future__ import annotations

import pytest

pytest_plugins = ["edgetier.testing.fixtures"]


def _has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="no CUDA execution provider on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_nvml import FIXTURES

from edgetier.hardware import HostPaths


@pytest.fixture
def tree(tmp_path: Path):
    """Copy a recorded tree (so tests may change counters) and return its HostPaths."""

    counter = iter(range(1000))

    def make(name: str) -> HostPaths:
        dst = tmp_path / f"{name}-{next(counter)}"
        shutil.copytree(FIXTURES / name, dst)
        return HostPaths.under(dst)

    return make


@pytest.fixture
def empty_host(tmp_path: Path) -> HostPaths:
    """A host with nothing: no GPU driver, no Jetson files, no RAPL, no thermal zones."""
    for sub in ("sys", "proc", "etc"):
        (tmp_path / sub).mkdir()
    return HostPaths.under(tmp_path)

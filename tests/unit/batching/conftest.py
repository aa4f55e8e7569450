"""Fixtures of the batcher tests."""

from __future__ import annotations

import pytest
from batching_helpers import FakeClock, GatedEngine


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine() -> GatedEngine:
    return GatedEngine()

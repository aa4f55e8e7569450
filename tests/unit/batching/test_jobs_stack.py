"""Joining requests into a batch: a view when they lie back to back in one buffer."""

from __future__ import annotations

import numpy as np

from edgetier.batching._jobs import stack_rows


def _slab(rows: int) -> np.ndarray:
    return np.arange(rows * 6, dtype=np.float32).reshape(rows, 2, 3)


def test_adjacent_rows_of_one_buffer_give_a_view() -> None:
    slab = _slab(8)
    parts = [slab[2:3], slab[3:5], slab[5:6]]
    joined = stack_rows(parts)
    assert np.shares_memory(joined, slab)
    np.testing.assert_array_equal(joined, np.concatenate(parts))
    assert joined.shape == (4, 2, 3)


def test_rows_out_of_order_or_apart_are_copied() -> None:
    slab = _slab(8)
    for parts in ([slab[3:4], slab[2:3]], [slab[0:1], slab[2:3]]):
        joined = stack_rows(parts)
        assert not np.shares_memory(joined, slab)
        np.testing.assert_array_equal(joined, np.concatenate(parts))


def test_separate_arrays_and_other_buffers_are_copied() -> None:
    a, b = _slab(1), _slab(1)
    joined = stack_rows([a, b])
    np.testing.assert_array_equal(joined, np.concatenate([a, b]))
    other = _slab(4)
    mixed = [_slab(4)[0:1], other[1:2]]
    np.testing.assert_array_equal(stack_rows(mixed), np.concatenate(mixed))


def test_a_view_of_a_flat_buffer_works_too() -> None:
    # pinned host buffers are reshaped views of a flat array
    flat = np.arange(4 * 6, dtype=np.float32)
    slab = flat.reshape(4, 2, 3)
    parts = [slab[1:2], slab[2:3]]
    joined = stack_rows(parts)
    assert np.shares_memory(joined, flat)
    np.testing.assert_array_equal(joined, np.concatenate(parts))

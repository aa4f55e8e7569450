"""Letterboxed request buffers as consecutive rows of reusable slabs."""

from __future__ import annotations

import numpy as np

from edgetier.batching._jobs import stack_rows
from edgetier.pipeline._preprocess import Letterboxer
from edgetier.pipeline._stages import _SlabPool


def test_rows_are_consecutive_and_batch_without_a_copy() -> None:
    pool = _SlabPool((1, 3, 8, 8), 4, pinned=False)
    rows = [pool.acquire() for _ in range(3)]
    assert all(slab is rows[0][1] for _, slab in rows)
    joined = stack_rows([buf for buf, _ in rows])
    assert joined.shape == (3, 3, 8, 8) and np.shares_memory(joined, rows[0][1])


def test_a_slab_is_reused_only_when_every_row_is_released() -> None:
    pool = _SlabPool((1, 3, 4, 4), 2, pinned=False)
    (_, first), (_, same) = pool.acquire(), pool.acquire()
    assert first is same
    _, second = pool.acquire()  # first is full: a new slab
    assert second is not first
    pool.release(first)
    _, also_second = pool.acquire()
    assert also_second is second  # the current slab still has a row
    _, third = pool.acquire()  # second is full, first still holds a row: a new slab
    assert third is not first and third is not second
    pool.release(first)  # now first is free
    pool.acquire()
    _, reused = pool.acquire()
    assert reused is first


def test_letterboxed_frames_land_in_their_rows() -> None:
    pool = _SlabPool((1, 3, 16, 16), 4, pinned=False)
    letterbox = Letterboxer(16, 16)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    prepared = [pool.letterboxed(letterbox, image) for image in images]
    batch = stack_rows([p.value for p in prepared])
    for i, image in enumerate(images):
        np.testing.assert_allclose(batch[i], image.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    for p in prepared:
        p.release()

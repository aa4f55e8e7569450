"""YOLO output decoding, class-aware NMS and the letterbox, on hand-made arrays."""

from __future__ import annotations

import numpy as np

from edgetier.pipeline import Letterboxer, decode_yolo, nms
from edgetier.pipeline._preprocess import host_buffer, resize_crops_into


def test_nms_suppresses_overlaps_of_one_class_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    classes = np.array([0, 0, 0, 1])
    keep = nms(boxes, scores, classes, iou_threshold=0.5)
    assert keep.tolist() == [3, 0, 2]  # box 1 overlaps box 0 (same class); box 3 is class 1
    agnostic = nms(boxes, scores, None, iou_threshold=0.5)
    assert agnostic.tolist() == [3, 2]


def test_nms_threshold_and_limit() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)  # IoU = 50 / 150 = 1/3
    scores = np.array([0.6, 0.9])
    assert nms(boxes, scores, iou_threshold=0.3).tolist() == [1]
    assert nms(boxes, scores, iou_threshold=0.4).tolist() == [1, 0]
    assert nms(boxes, scores, iou_threshold=0.4, max_detections=1).tolist() == [1]
    assert nms(np.empty((0, 4)), np.empty(0)).size == 0


def test_decode_yolo_layout() -> None:
    # 2 classes, 4 anchors: [cx, cy, w, h, score0, score1] per anchor (columns).
    out = np.zeros((6, 4), np.float32)
    out[:, 0] = [20, 30, 10, 20, 0.9, 0.1]  # class 0 at (15, 20, 25, 40)
    out[:, 1] = [21, 30, 10, 20, 0.8, 0.1]  # overlaps anchor 0, same class: suppressed
    out[:, 2] = [21, 30, 10, 20, 0.1, 0.7]  # same place, class 1: kept
    out[:, 3] = [50, 50, 4, 4, 0.1, 0.2]  # below the confidence threshold
    boxes, scores, cls = decode_yolo(out, confidence=0.25, iou_threshold=0.5)
    assert cls.tolist() == [0, 1]
    np.testing.assert_allclose(boxes[0], [15, 20, 25, 40])
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-6)
    only1 = decode_yolo(out, confidence=0.25, allowed_classes=np.array([1]))
    assert only1[2].tolist() == [1]  # with class 0 masked only anchor 2 passes 0.25
    np.testing.assert_allclose(only1[0][0], [16, 20, 26, 40])


def test_letterbox_places_and_maps_back() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = 255  # left half white
    lb = Letterboxer(64, 64)
    out = host_buffer((3, 64, 64), pinned=False)
    info = lb(image, out)
    assert info.scale == 64 / 200 and info.pad_x == 0 and info.pad_y == 16
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0, 0], 114 / 255, rtol=1e-6)  # grey border
    np.testing.assert_allclose(out[:, 32, 5], 1.0)  # white half
    np.testing.assert_allclose(out[:, 32, 60], 0.0)  # black half
    back = info.to_frame(np.array([[0, 16, 32, 48]], np.float32), 200, 100)
    np.testing.assert_allclose(back, [[0, 0, 100, 100]], atol=1e-4)


def test_crops_are_resized_into_one_buffer() -> None:
    image = np.zeros((50, 50, 3), np.uint8)
    image[10:20, 10:20] = (255, 0, 0)
    image[30:40, 30:40] = (0, 0, 255)
    out = np.empty((2, 3, 8, 8), np.float32)
    resize_crops_into(image, np.array([[10, 10, 20, 20], [30, 30, 40, 40]], float), out)
    np.testing.assert_allclose(out[0, :, 4, 4], [1, 0, 0])
    np.testing.assert_allclose(out[1, :, 4, 4], [0, 0, 1])


def test_host_buffer_falls_back_to_pageable_memory_without_cuda() -> None:
    from edgetier.pipeline._preprocess import cuda_host_alloc_available

    buf = host_buffer((2, 3), np.float32)
    assert buf.shape == (2, 3) and buf.dtype == np.float32
    if not cuda_host_alloc_available():
        assert buf.base is None  # a plain numpy allocation

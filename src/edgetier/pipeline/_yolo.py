"""YOLO-family output decoding and class-aware non-maximum suppression, in numpy.

The detector's output is YOLOv8's layout: [N, 4 + C, A] with (cx, cy, w, h) in model-input
pixels followed by C class scores in [0, 1] for each of A anchors.
"""

from __future__ import annotations

import numpy as np


def nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None = None,
    *,
    iou_threshold: float = 0.5,
    max_detections: int | None = None,
) -> np.ndarray:
    """Greedy NMS; with `class_ids`, boxes of different classes never suppress each other.

    Returns the indices kept, best score first. Class awareness uses the offset trick:
    each class is moved to its own region of the plane, so one pass serves all classes.
    """
    if len(boxes_xyxy) == 0:
        return np.empty(0, dtype=np.int64)
    boxes = boxes_xyxy.astype(np.float64, copy=False)
    if class_ids is not None:
        span = float(boxes.max() - min(boxes.min(), 0.0)) + 1.0
        boxes = boxes + (class_ids.astype(np.float64) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    # the loop runs once per kept box: columns and areas are computed once, outside it
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if max_detections is not None and len(keep) >= max_detections:
            break
        rest = order[1:]
        w = np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])
        h = np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])
        inter = np.maximum(w, 0) * np.maximum(h, 0)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_yolo(
    output: np.ndarray,
    *,
    confidence: float = 0.25,
    iou_threshold: float = 0.5,
    max_detections: int = 300,
    allowed_classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's output [4 + C, A] into (boxes xyxy, scores, class ids) after NMS.

    Boxes stay in model-input pixels; undo the letterbox with `LetterboxInfo.to_frame`.
    """
    if output.ndim != 2 or output.shape[0] < 5:
        raise ValueError(f"YOLO output must be [4 + C, A] with C >= 1, got {list(output.shape)}")
    class_scores = output[4:]
    if allowed_classes is not None:
        mask = np.zeros(class_scores.shape[0], dtype=bool)
        mask[allowed_classes] = True
        class_scores = np.where(mask[:, None], class_scores, 0.0)
    class_ids = class_scores.argmax(axis=0)
    scores = class_scores[class_ids, np.arange(class_scores.shape[1])]
    candidates = np.flatnonzero(scores >= confidence)
    max_candidates = 30 * max_detections  # as Ultralytics' max_nms: bounds a noisy frame's cost
    if candidates.size > max_candidates:
        top = np.argpartition(-scores[candidates], max_candidates - 1)[:max_candidates]
        candidates = candidates[top]
    if candidates.size == 0:
        empty = np.empty((0, 4), dtype=np.float32)
        return empty, np.empty(0, np.float32), np.empty(0, np.int64)
    cx, cy, w, h = output[:4, candidates]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    sc = scores[candidates].astype(np.float32)
    cls = class_ids[candidates].astype(np.int64)
    keep = nms(boxes, sc, cls, iou_threshold=iou_threshold, max_detections=max_detections)
    return boxes[keep], sc[keep], cls[keep]

"""Letterbox, resize and normalise frames into preallocated, contiguous batch buffers.

A frame costs two passes: `cv2.resize` writes straight into the letterbox canvas (no
temporary), and the canvas is split into its three colour planes and scaled from uint8 to
float32 in [0, 1] inside the caller's batch slot (contiguous writes, no GIL held). Each
thread has its own canvas, so the sources' reader threads letterbox in parallel. Pinned
host memory is used only where a CUDA device and the CUDA runtime are present; elsewhere
the buffers are plain numpy arrays.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger("edgetier.pipeline")


@dataclass(frozen=True, slots=True)
class LetterboxInfo:
    """How a frame was placed in the model input: `model = frame * scale + (pad_x, pad_y)`."""

    scale: float
    pad_x: float
    pad_y: float

    def to_frame(self, boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
        """Map boxes from model-input pixels back to frame pixels (clipped to the frame)."""
        out = boxes_xyxy.astype(np.float32, copy=True)
        out[:, [0, 2]] -= self.pad_x
        out[:, [1, 3]] -= self.pad_y
        out /= self.scale
        clip_boxes(out, width, height)
        return out


def clip_boxes(xyxy: np.ndarray, width: float, height: float) -> None:
    """Clip [N, 4] xyxy boxes to the frame, in place (x to [0, width], y to [0, height]).

    Strided views, not index lists: ``out=xyxy[:, [0, 2]]`` would write to a copy.
    """
    np.clip(xyxy[:, 0::2], 0, width, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, height, out=xyxy[:, 1::2])


class Letterboxer:
    """Letterboxes frames of any size into [3, H, W] float32 slots.

    Thread-safe: each calling thread reuses its own canvas.
    """

    def __init__(self, height: int, width: int, *, pad_value: int = 114) -> None:
        self.height = height
        self.width = width
        self.pad_value = pad_value
        self._local = threading.local()

    def _canvas_for(self, h: int, w: int) -> np.ndarray:
        local = self._local
        canvas: np.ndarray | None = getattr(local, "canvas", None)
        if canvas is None:
            canvas = local.canvas = np.full((self.height, self.width, 3), self.pad_value, np.uint8)
            local.last = (h, w)
        elif local.last != (h, w):  # borders change only when the frame size does
            canvas.fill(self.pad_value)
            local.last = (h, w)
        return canvas

    def __call__(self, image: np.ndarray, out: np.ndarray) -> LetterboxInfo:
        """Write `image` (HxWx3 uint8) into `out` ([3, H, W] float32, e.g. a batch row)."""
        h, w = image.shape[:2]
        scale = min(self.height / h, self.width / w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        left, top = (self.width - nw) // 2, (self.height - nh) // 2
        canvas = self._canvas_for(h, w)
        region = canvas[top : top + nh, left : left + nw]
        if (nh, nw) == (h, w):
            region[...] = image
        else:
            cv2.resize(image, (nw, nh), dst=region, interpolation=cv2.INTER_LINEAR)
        normalise_into(canvas, out)
        return LetterboxInfo(scale=scale, pad_x=float(left), pad_y=float(top))


def normalise_into(image_hwc: np.ndarray, out_chw: np.ndarray) -> None:
    """uint8 HWC -> float32 CHW in [0, 1] into `out_chw`.

    Three-channel images are split into contiguous planes first: scaling a contiguous
    plane is faster than one pass over the strided transpose.
    """
    scale = np.float32(1.0 / 255.0)
    if image_hwc.ndim == 3 and image_hwc.shape[2] == 3 and image_hwc.flags.c_contiguous:
        for c, plane in enumerate(cv2.split(image_hwc)):
            np.multiply(plane, scale, out=out_chw[c], casting="unsafe")
        return
    np.multiply(image_hwc.transpose(2, 0, 1), scale, out=out_chw, casting="unsafe")


def resize_crops_into(
    image: np.ndarray, boxes_xyxy: np.ndarray, out: np.ndarray, *, padding: float = 0.0
) -> None:
    """Crop each box of `image`, resize it to out's [H, W] and normalise into out[i]."""
    _, _, oh, ow = out.shape
    h, w = image.shape[:2]
    scratch = np.empty((oh, ow, 3), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes_xyxy):
        px, py = (x2 - x1) * padding, (y2 - y1) * padding
        xa, ya = int(max(0, x1 - px)), int(max(0, y1 - py))
        xb, yb = int(min(w, np.ceil(x2 + px))), int(min(h, np.ceil(y2 + py)))
        crop = image[ya : max(yb, ya + 1), xa : max(xb, xa + 1)]
        cv2.resize(crop, (ow, oh), dst=scratch, interpolation=cv2.INTER_LINEAR)
        normalise_into(scratch, out[i])


@functools.cache
def cuda_host_alloc_available() -> bool:
    """True when the CUDA runtime is loadable and sees at least one device."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return False
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception:  # a driver-less machine can raise from inside the bindings
        return False
    return int(err) == 0 and count > 0


_PINNED: list[object] = []  # keeps host allocations alive for the life of the process


def host_buffer(
    shape: tuple[int, ...], dtype: np.dtype | type = np.float32, *, pinned: bool = True
) -> np.ndarray:
    """A C-contiguous array, in page-locked (pinned) memory where CUDA is present.

    Pinned memory lets a CUDA engine copy a batch to the device asynchronously; without
    CUDA it is only a cost, so a plain numpy array is returned.
    """
    dt = np.dtype(dtype)
    if not (pinned and cuda_host_alloc_available()):
        return np.empty(shape, dtype=dt)
    from cuda.bindings import runtime as cudart

    nbytes = int(np.prod(shape)) * dt.itemsize
    err, ptr = cudart.cudaMallocHost(max(nbytes, 1))
    if int(err) != 0:
        log.warning("cudaMallocHost(%d) failed (%s); using pageable memory", nbytes, err)
        return np.empty(shape, dtype=dt)
    raw = (ctypes.c_byte * max(nbytes, 1)).from_address(int(ptr))
    _PINNED.append((raw, ptr))
    count = int(np.prod(shape))
    array: np.ndarray = np.frombuffer(memoryview(raw).cast("B"), dtype=dt, count=count)
    return array.reshape(shape)

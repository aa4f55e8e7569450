"""Execution providers and GPUs: the provider names, declared once, and the GPU count.

EdgeTier's configs spell providers ``tensorrt``, ``cuda``, ``cpu``; ONNX Runtime spells
them ``TensorrtExecutionProvider`` and so on. Both spellings live here and nowhere else::

    PROVIDER_NAMES["cuda"]          # "CUDAExecutionProvider"
    visible_gpu_count()             # 0 on a CPU-only node; CUDA_VISIBLE_DEVICES honoured
    note_node_providers(...)        # one INFO line per node, not one WARNING per model
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "GPU_PROVIDERS",
    "PROVIDER_KEYS",
    "PROVIDER_NAMES",
    "ProviderKey",
    "available_providers",
    "note_node_providers",
    "visible_gpu_count",
]

logger = logging.getLogger("edgetier.runtime")

ProviderKey = Literal["tensorrt", "cuda", "cpu"]

PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
"""Config spelling -> ONNX Runtime execution provider name, in the default order."""

PROVIDER_KEYS: tuple[ProviderKey, ...] = ("tensorrt", "cuda", "cpu")
"""The config spellings, in the default order (fastest first)."""

GPU_PROVIDERS = frozenset({PROVIDER_NAMES["tensorrt"], PROVIDER_NAMES["cuda"]})
"""Providers whose nodes run on an NVIDIA GPU."""


def available_providers() -> list[str]:
    """The providers this onnxruntime build has (ONNX Runtime's names)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


@functools.cache
def visible_gpu_count() -> int:
    """How many NVIDIA GPUs this process may use: 0 on a CPU-only node.

    NVML counts the GPUs of the machine; ``CUDA_VISIBLE_DEVICES``, when set, narrows them
    as CUDA does (Triton counts with CUDA, which honours it). Where NVML is missing (older
    Jetsons) the CUDA runtime is asked, if this onnxruntime has the CUDA provider. Cached
    for the process; tests replace it.
    """
    count = _nvml_count()
    if count is None and PROVIDER_NAMES["cuda"] in available_providers():
        count = _cudart_count()
    count = count or 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part for part in visible.split(",") if part.strip()]
        # CUDA stops at the first invalid id; "-1" or "" hides every GPU.
        usable = 0
        for part in ids:
            if not part.strip().lstrip("-").isdigit() or int(part) < 0:
                break
            usable += 1
        count = min(count, usable)
    return count


def _nvml_count() -> int | None:
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
        try:
            return int(nvml.nvmlDeviceGetCount())
        finally:
            nvml.nvmlShutdown()
    except Exception:  # not installed, no driver, NotSupported: NVML cannot say
        return None


def _cudart_count() -> int | None:
    for name in ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0"):
        try:
            cudart = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cudart.cudaGetDeviceCount(ctypes.byref(count)) == 0:
            return count.value
        return 0
    return None


_noted: set[tuple[str, ...]] = set()
_noted_lock = threading.Lock()


def note_node_providers(missing: Sequence[str], running: str, have: Sequence[str]) -> None:
    """Say once per node (process) that GPU providers asked for are not usable here.

    On a node without a GPU that is how things should be: one INFO line naming the
    provider in use. A GPU that is present but that this onnxruntime cannot use is worth
    a WARNING, once, with the fix.
    """
    key = (*missing, running)
    with _noted_lock:
        if key in _noted:
            return
        _noted.add(key)
    gpus = visible_gpu_count()
    if running in GPU_PROVIDERS:  # e.g. a build without TensorRT: the GPU still works
        logger.info(
            "this onnxruntime lacks %s (it has %s): models run on %s",
            ", ".join(missing),
            ", ".join(have),
            running,
        )
    elif gpus == 0:
        logger.info(
            "this node has no GPU: models run on %s (this onnxruntime has %s)",
            running,
            ", ".join(have),
        )
    else:
        logger.warning(
            "this node has %d GPU%s but this onnxruntime lacks %s (it has %s): models run "
            "on %s; install onnxruntime-gpu (not beside onnxruntime) to use the GPU",
            gpus,
            "" if gpus == 1 else "s",
            ", ".join(missing),
            ", ".join(have),
            running,
        )


def _forget_notes() -> None:
    """Tests: log the node note again."""
    with _noted_lock:
        _noted.clear()

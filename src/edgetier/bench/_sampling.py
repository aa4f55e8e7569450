"""Resource sampling during a measurement window: CPU use, peak memory, GPU utilisation.

A daemon thread polls psutil (and NVML where present) every ``interval_s``; CPU use is
computed from CPU-time deltas, which is exact regardless of the polling rate.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

__all__ = ["ResourceSampler", "ResourceUsage", "cpu_seconds"]


@dataclass(frozen=True)
class ResourceUsage:
    """What the sampled processes used during a window."""

    cpu_percent: float | None  # 100 = one core busy
    peak_memory_bytes: int | None
    gpu_util_percent: float | None


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds of processes and their children (gone ones count 0)."""
    total = 0.0
    for proc in procs:
        for p in _tree(proc):
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
    return total


def _rss(members: Sequence[psutil.Process]) -> int:
    total = 0
    for p in members:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


class _Gpu:
    """NVML utilisation of all GPUs, or nothing where NVML is absent (CPU machines)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception:
            self._nvml = None

    def util(self) -> float | None:
        if self._nvml is None or not self._handles:
            return None
        try:
            rates = [self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
        except Exception:
            return None
        return float(sum(rates) / len(rates))

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()


_TREE_REFRESH_S = 1.0


class ResourceSampler:
    """Samples the given processes (default: this one) between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: Sequence[int] | None = None, *, interval_s: float = 0.05) -> None:
        self._procs = [psutil.Process(pid) for pid in (pids or [psutil.Process().pid])]
        self._interval_s = interval_s
        self._gpu = _Gpu()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._gpu_samples: list[float] = []
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._members: list[psutil.Process] = []
        self._members_at = -1e9

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def _sample(self) -> None:
        # Finding the children scans all of /proc (milliseconds of CPU taken from the work
        # being measured), so the process tree is refreshed once a second, not every sample.
        now = time.monotonic()
        if now - self._members_at >= _TREE_REFRESH_S:
            self._members = [p for proc in self._procs for p in _tree(proc)]
            self._members_at = now
        self._peak = max(self._peak, _rss(self._members))
        util = self._gpu.util()
        if util is not None:
            self._gpu_samples.append(util)

    def start(self) -> None:
        self._stop.clear()
        self._members_at = -1e9
        self._peak = 0
        self._gpu_samples = []
        self._t0 = time.perf_counter()
        self._cpu0 = cpu_seconds(self._procs)
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> ResourceUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._t0
        cpu = (cpu_seconds(self._procs) - self._cpu0) / wall * 100.0 if wall > 0 else None
        gpu = sum(self._gpu_samples) / len(self._gpu_samples) if self._gpu_samples else None
        return ResourceUsage(cpu, self._peak or None, gpu)

    def close(self) -> None:
        self._gpu.close()

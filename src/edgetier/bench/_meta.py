"""Run metadata for reports: date, versions, hardware fingerprint, model identity."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import psutil

from edgetier.bench._schema import BenchKind, BenchReport, BenchResult, ModelInfo

__all__ = ["command_line", "hardware_fingerprint", "make_report", "model_info", "versions"]

_PACKAGES = ("edgetier", "onnxruntime", "onnxruntime-gpu", "numpy", "tritonclient", "grpcio")


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that shape the figures, plus Python's."""
    found = {"python": platform.python_version()}
    for name in (*_PACKAGES, *extra):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_fingerprint() -> dict[str, Any]:
    """edgetier.hardware.fingerprint(), or the same keys from psutil where it is missing."""
    try:
        from edgetier.hardware import fingerprint

        return dict(fingerprint())
    except Exception:  # the hardware package may be absent or fail on exotic hosts
        cpu, cores, memory = _cpu_name(), os.cpu_count() or 1, psutil.virtual_memory().total
        ident = hashlib.sha256(f"{cpu}|{cores}|{memory}".encode()).hexdigest()[:12]
        return {
            "id": ident,
            "cpu": cpu,
            "cores": cores,
            "memory_bytes": memory,
            "gpus": [],
            "profile": None,
        }


def _flops(path: Path) -> float | None:
    try:
        from edgetier.hardware import model_cost

        return float(model_cost(path).flops)
    except Exception:  # cost counting is best effort: unknown ops or shapes give null
        return None


def model_info(path: Path, name: str | None = None) -> ModelInfo:
    """Name, sha256 and FLOPs at batch 1 (null where they cannot be counted) of a model file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if name is None:
        name = path.parent.parent.name if path.parent.name.isdigit() else path.stem
    return ModelInfo(name=name, sha256=digest.hexdigest(), flops_per_inference=_flops(path))


def command_line() -> str:
    """The command as typed (argv, shell-quoted, program name shortened)."""
    argv = list(sys.argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def make_report(
    kind: BenchKind,
    results: list[BenchResult],
    *,
    model: ModelInfo | None,
    command: str | None = None,
    notes: list[str] | None = None,
    extra_versions: tuple[str, ...] = (),
    settings: dict[str, Any] | None = None,
) -> BenchReport:
    """A report stamped with the date (UTC), versions, hardware and command."""
    return BenchReport(
        kind=kind,
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        command=command or command_line(),
        versions=versions(extra_versions),
        hardware=hardware_fingerprint(),
        model=model,
        results=results,
        notes=notes or [],
        settings=settings or {},
    )

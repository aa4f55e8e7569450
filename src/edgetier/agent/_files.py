"""Files the agent writes into its store: whole or not at all, checked by digest."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

__all__ = ["copy_sidecar", "file_has_digest", "fsync_dir", "read_text", "write_atomic"]

PACKAGE_SCHEME = "package://"


def read_text(path: Path) -> str | None:
    """The file's text, or None when there is none."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (a crash or a power cut leaves the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_has_digest(path: Path, digest: str) -> bool:
    """Whether the file exists and hashes to ``digest`` (``sha256:<hex>``)."""
    sha = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
    except OSError:
        return False
    return f"sha256:{sha.hexdigest()}" == digest


def copy_sidecar(pipeline: dict[str, Any], model: str, path: Path) -> None:
    """A pipeline that named ``package://MODEL`` reads class names from the shipped
    model's sidecar YAML: the downloaded file ``path`` gets a copy of it beside it.

    The shipped file is found where the package is installed, without importing the
    pipeline package (the agent drives the data plane through processes only).
    """
    stages = pipeline.get("stages") or []
    named = any(
        isinstance(s, dict) and s.get("model") == f"{PACKAGE_SCHEME}{model}" for s in stages
    )
    sidecar = path.with_suffix(".yaml")
    if not named or sidecar.exists():
        return
    spec = importlib.util.find_spec("edgetier")
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        shipped = Path(folder) / "pipeline" / "models" / f"{model}.yaml"
        if shipped.is_file():
            write_atomic(sidecar, shipped.read_text(encoding="utf-8"))
            return

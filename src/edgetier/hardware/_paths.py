"""Where the host's pseudo file systems live, so that every probe can read a recorded tree.

Tests build a directory with ``sys/``, ``proc/`` and ``etc/`` sub-folders copied from a real
device and pass ``HostPaths.under(that_dir)``; production code uses ``HostPaths()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostPaths", "read_int", "read_text"]


@dataclass(frozen=True)
class HostPaths:
    """Roots of sysfs, procfs and /etc; each can be pointed at a recorded fixture."""

    sys_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")
    etc_root: Path = Path("/etc")

    @classmethod
    def under(cls, root: str | Path) -> HostPaths:
        """Paths below one directory holding ``sys``, ``proc`` and ``etc``."""
        base = Path(root)
        return cls(base / "sys", base / "proc", base / "etc")


def read_text(path: Path) -> str | None:
    """The stripped content of a small pseudo file, or None if absent or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip("\x00\n ")
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    """An integer pseudo file (sysfs style), or None if absent, unreadable or not a number."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None

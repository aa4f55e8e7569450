"""The agent's children (``edgetier serve``, ``edgetier pipeline run``): started, watched,
stopped with a drain, and restarted with exponential back-off after a crash.

A child runs in a session of its own (a Ctrl-C at the terminal reaches the agent, which
stops its children in order) and, on Linux, gets SIGTERM when the agent dies, so a killed
agent leaves no server holding its ports::

    child = Child("serve", [*edgetier, "serve", ...], log_path=store / "logs" / "serve.log",
                  on_exit=wake.set)
    await child.start()
    ...
    await child.stop(timeout_s=20)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["Backoff", "Child", "kill_stale", "start_time"]

_PR_SET_PDEATHSIG = 1
_LOG_ROTATE_BYTES = 5 * 2**20


@dataclass
class Backoff:
    """Exponential back-off: ``initial_s``, doubling up to ``max_s``; ``failures`` counts
    the failures in a row."""

    initial_s: float
    max_s: float
    failures: int = 0
    not_before: float = 0.0  # time.monotonic()

    def failed(self) -> float:
        """Count a failure; returns the delay before the next try."""
        delay = min(self.max_s, self.initial_s * 2.0**self.failures)
        self.failures += 1
        self.not_before = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self.not_before

    def wait_s(self) -> float:
        return max(0.0, self.not_before - time.monotonic())


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to send SIGTERM to the child when the agent's thread that forked it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One supervised process; ``exited()`` reports a crash once, with its exit code."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        on_exit: Callable[[], None] | None = None,
        fingerprint: str = "",
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.cwd = cwd
        self.on_exit = on_exit
        self.fingerprint = fingerprint
        """What the child was started for (a file's hash): a different one means restart."""
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0  # time.monotonic()
        self._ended_at: float | None = None
        self._stopping = False
        self._reported = True
        self._log_offset = 0
        self._watcher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Child({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def uptime_s(self) -> float:
        """How long the child has run: until now, or until it ended (0 before a start)."""
        if self.proc is None:
            return 0.0
        ended = None if self.running else self._ended_at
        return (time.monotonic() if ended is None else ended) - self.started_at

    async def start(self) -> None:
        """Start the process (stdout and stderr appended to ``log_path``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(self.log_path, self.log_path.with_suffix(self.log_path.suffix + ".1"))
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.started_at, self._ended_at = time.monotonic(), None
        self._stopping = False
        self._reported = False
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(self.proc), name=f"watch-{self.name}"
        )

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._ended_at = time.monotonic()
        if self.on_exit is not None and not self._stopping:
            self.on_exit()

    def exited(self) -> int | None:
        """The exit code of a child that ended by itself, once; None otherwise."""
        if self.proc is None or self.proc.returncode is None or self._reported:
            return None
        self._reported = True
        return None if self._stopping else self.proc.returncode

    async def stop(self, *, timeout_s: float) -> int | None:
        """SIGTERM (the server drains), then SIGKILL after ``timeout_s``; the exit code."""
        proc = self.proc
        if proc is None:
            return None
        self._stopping = True
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._reported = True
        return proc.returncode

    def log_tail(self, lines: int = 3, max_chars: int = 400) -> str:
        """The last lines the child wrote in its last run (why it stopped, usually)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(self._log_offset, size - 8192))  # this run's lines only
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if line.strip() and not line.startswith("---")]
        return " | ".join(kept[-lines:])[-max_chars:]


def kill_stale(pid: int, started: float, *, timeout_s: float) -> bool:
    """Stop a child an earlier run of the agent left behind (it was killed): the process
    ``pid`` if it is still the one started at ``started`` (a Unix time). True if one was
    stopped."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 2.0:
            return False  # the pid was reused by another process
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    except psutil.Error:
        return False
    return True


def start_time(pid: int) -> float:
    """When process ``pid`` started (Unix time), as :func:`kill_stale` compares it."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return time.time()

"""A live progress display (rich) for benchmark sweeps; silent when disabled or not a TTY."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["SweepProgress"]


class SweepProgress:
    """One bar over a sweep's configurations; the line under it names the current one."""

    def __init__(self, total: int, *, title: str, enabled: bool = True) -> None:
        self._console = Console(stderr=True)
        self._enabled = enabled and self._console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=False,
            disable=not self._enabled,
        )
        self._task = self._progress.add_task(title, total=max(total, 1))
        self._title = title

    def __enter__(self) -> SweepProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def phase(self, description: str) -> None:
        """Name what runs now."""
        self._progress.update(self._task, description=f"{self._title}: {description}")

    def advance(self, summary: str | None = None) -> None:
        """One configuration done; ``summary`` is printed above the bar."""
        self._progress.advance(self._task)
        if summary and self._enabled:
            self._progress.console.print(summary)

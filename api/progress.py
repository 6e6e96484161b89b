"""Progress reporting for long jobs: a rich progress bar on a terminal, silence elsewhere.

Long-running functions take a ``Progress`` and call ``task(label, total)`` then ``advance``; the
CLI passes a ``RichProgress``, the API and tests the no-op default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Task(Protocol):
    def advance(self, n: float = 1) -> None: ...


class Progress(Protocol):
    def task(self, label: str, total: float | None) -> Task: ...


class _NullTask:
    def advance(self, n: float = 1) -> None:
        pass


class NullProgress:
    """Reports nothing (API requests, tests)."""

    def task(self, label: str, total: float | None) -> Task:  # noqa: ARG002
        return _NullTask()


class _RichTask:
    def __init__(self, progress: object, task_id: object) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._id, n)  # type: ignore[attr-defined]


class RichProgress:
    """A rich progress bar (one line per task), labels in Chinese and English."""

    def __init__(self) -> None:
        from rich.progress import (  # noqa: PLC0415 - only the CLI pays for rich
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )

    def task(self, label: str, total: float | None) -> Task:
        return _RichTask(self._progress, self._progress.add_task(label, total=total))

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


@contextmanager
def cli_progress(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress bar when ``enabled``, else nothing."""
    if not enabled:
        yield NullProgress()
        return
    with RichProgress() as progress:
        yield progress

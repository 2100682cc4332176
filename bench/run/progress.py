"""Progress bars (rich) for training and evaluation; a no-op stand-in when output is not a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Bars:
    """``add(label, total) -> task``, ``advance(task)``, ``remove(task)``; used as a context manager."""

    def __init__(self, console: Console, enabled: bool = True):
        self.console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
            disable=not enabled,
        )

    def __enter__(self) -> "Bars":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def add(self, label: str, total: int) -> int:
        return self._progress.add_task(label, total=total)

    def advance(self, task: int, n: int = 1) -> None:
        self._progress.advance(task, n)

    def remove(self, task: int) -> None:
        self._progress.remove_task(task)

    def note(self, text: str) -> None:
        """One plain line among the bars (e.g. a training that continues from a saved epoch)."""
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def update(self, task: int, *, label: str | None = None, completed: int | None = None) -> None:
        """Change a bar's label and/or set its count (e.g. cells finished by other processes)."""
        self._progress.update(task, description=label, completed=completed)

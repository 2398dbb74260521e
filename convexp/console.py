"""What a user sees while a run works: a Rich progress bar on a terminal, plain lines elsewhere.

Every line also goes to the log.txt of the run folders being written, so the folder keeps the
same account the terminal showed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from convexp.runs import RunFolder


class Reporter:
    def __init__(self, quiet: bool = False, console: Console | None = None, prefix: str = ""):
        self.console = console or Console(highlight=False)
        self.prefix = prefix  # on the terminal only: e.g. which worker's child a line is from
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            self.console.width = 120  # logs and pipes: room for a whole table row
        self.live_bars = self.console.is_terminal and not quiet and sys.stdout.isatty()
        self.logs: list[RunFolder] = []

    def line(self, text: str) -> None:
        shown = text if text.startswith(self.prefix) else self.prefix + text
        self.console.print(shown, markup=False, soft_wrap=True)
        for run in self.logs:
            run.log(text)

    def table(self, title: str, columns: list[str], rows: list[list[object]]) -> None:
        """A result table on the terminal, and the same table as text in every open log.txt."""
        table = make_table(title, columns, rows)
        self.console.print(table)
        if self.logs:
            capture = Console(width=max(120, self.console.width), highlight=False, color_system=None)
            with capture.capture() as captured:
                capture.print(table)
            for run in self.logs:
                run.log(captured.get().rstrip("\n"))

    @contextlib.contextmanager
    def logging_to(self, run: RunFolder) -> Iterator[None]:
        self.logs.append(run)
        try:
            yield
        finally:
            self.logs.remove(run)

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        """Yields `advance()`: one call per finished batch. A no-op without a terminal."""
        if not self.live_bars:
            yield lambda: None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda: progress.advance(task)


def make_table(title: str, columns: list[str], rows: list[list[object]]):
    """A Rich table; floats are shown with 4 decimals. Cells are plain text, never Rich markup."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left")
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for row in rows:
        table.add_row(*(Text(f"{cell:.4f}" if isinstance(cell, float) else str(cell)) for cell in row))
    return table


def print_table(console: Console, title: str, columns: list[str], rows: list[list[object]]) -> None:
    console.print(make_table(title, columns, rows))

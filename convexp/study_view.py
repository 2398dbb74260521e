"""One live table of a study's children while they train in worker processes.

Each row is read from the child's own folder, which its worker writes after every epoch
(summary.json for the status, metrics.csv for epochs and validation accuracy), so the view needs
nothing from the workers but the files they already keep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from convexp.errors import ConvexpError
from convexp.progress import duration
from convexp.record import METRICS, RunRecord, read_metrics


@dataclass
class ChildProgress:
    name: str
    status: str
    epochs_done: int
    epochs_planned: int
    val_accuracy: float | None
    seconds: float | None  # since it started, while it runs

    def eta(self) -> str:
        if self.status != "running" or not self.seconds or not self.epochs_done or not self.epochs_planned:
            return ""
        left = max(0, self.epochs_planned - self.epochs_done)
        return duration(self.seconds / self.epochs_done * left)


def child_progress(name: str, folder: Path, epochs_planned: int, started: float | None, status: str) -> ChildProgress:
    """What a child's folder says now: its epochs so far (its own and its children's, for a study
    step) and the latest validation accuracy."""
    runs = [folder, *sorted(path.parent for path in folder.glob(f"*/{METRICS}"))]
    done, latest, latest_time = 0, None, -1.0
    for run in runs:
        try:
            rows = read_metrics(run)
            modified = (run / METRICS).stat().st_mtime
        except OSError:  # not written yet, or being replaced
            continue
        done += len(rows)
        if rows and modified > latest_time and "val_accuracy" in rows[-1]:
            latest, latest_time = rows[-1]["val_accuracy"], modified
    if status == "running":
        try:
            status = RunRecord.read(folder).status or "starting"
        except ConvexpError:
            pass
    seconds = time.perf_counter() - started if started is not None else None
    return ChildProgress(name, status, done, epochs_planned, latest, seconds)


def progress_table(children: list[ChildProgress]):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text("child runs"), title_justify="left")
    for column in ("child", "status", "epoch", "val acc", "time", "ETA"):
        table.add_column(column)
    for c in children:
        epoch = f"{c.epochs_done}/{c.epochs_planned}" if c.epochs_planned else str(c.epochs_done)
        table.add_row(Text(c.name), Text(c.status), epoch, "" if c.val_accuracy is None else f"{c.val_accuracy:.4f}",
                      "" if c.seconds is None else duration(c.seconds), c.eta())
    return table

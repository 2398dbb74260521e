"""A run folder read back: summary.json and metrics.csv through one reader, with named fields.

The report, the verdicts, `convexp runs`, the sweep's ranking and the live view of a study all
read finished (or running) runs through RunRecord, so what a field means is written once here.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convexp.runs import read_summary

METRICS = "metrics.csv"  # one row per epoch: epoch, train/val(/test) loss and accuracy


def read_metrics(folder: Path) -> list[dict[str, float]]:
    """metrics.csv of a run folder, every value a float; [] before the first epoch is written."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    with path.open() as f:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


@dataclass(frozen=True)
class DataSizes:
    """What the run trained, validated and was tested on (summary.json's `data`)."""

    root: str | None
    train: int | None  # None: not recorded
    val: int | None
    test: int | None


@dataclass(frozen=True)
class RunRecord:
    path: Path
    summary: dict[str, Any]  # summary.json, for what has no name here

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """The record of the run at `path`; a damaged summary.json is a ConvexpError naming it."""
        return cls(Path(path), read_summary(path))

    @property
    def command(self) -> str:
        return self.summary.get("command", "")

    @property
    def status(self) -> str:
        return self.summary.get("status", "")

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def data(self) -> DataSizes | None:
        data = self.summary.get("data")
        return DataSizes(*(data.get(key) for key in ("root", "train", "val", "test"))) if data else None

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's metrics (train/val(/test) loss and accuracy)."""
        return self.summary["final"]

    @property
    def best_val_accuracy(self) -> float:
        return self.summary["best_val_accuracy"]

    @property
    def test_accuracy(self) -> float | None:
        """Measured once, after training; None for a run that was not tested (a sweep's, until chosen)."""
        return self.summary.get("test_accuracy")

    @property
    def seconds_per_epoch(self) -> float:
        return self.summary["seconds_per_epoch"]

    @property
    def accuracy_per_resolution(self) -> dict[str, float]:
        return self.summary["accuracy_per_resolution"]

    @functools.cached_property
    def epochs(self) -> list[dict[str, float]]:
        """metrics.csv, read once."""
        return read_metrics(self.path)

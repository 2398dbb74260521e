"""Watching the training loop, in the spirit of Lightning's hooks: the loop only trains, and
calls every watcher's hooks at the end of each batch, each epoch and the run. A watcher may be
given to one training unit (train_unit's `callbacks`: e.g. what a study adds to its child), or
set for everything trained inside a `with watching(...)` block in this process (e.g. where a
whole study stands, shown on every epoch's line): nothing in between has to pass it along.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from convexp.runs import RunFolder


@dataclass
class EpochEnd:
    """What an epoch left: its metrics.csv row and training seconds; a watcher may add a note
    to the epoch's line on the terminal and in log.txt."""

    run: RunFolder
    epoch: int
    epochs: int
    row: dict[str, float]
    seconds: float
    batch_losses: list[float] = field(default_factory=list)  # the epoch's training batches, in order
    first_step: int = 0  # the global step (batch count from 0) of its first batch
    learning_rate: float = 0.0  # at its last batch
    notes: list[str] = field(default_factory=list)


class Callback:
    """Every hook does nothing unless a watcher overrides it."""

    def on_batch_end(self, run: RunFolder, epoch: int, batch: int, loss: torch.Tensor) -> None:
        """After each training batch; `loss` stays on the device (reading it would sync every batch)."""

    def on_epoch_end(self, event: EpochEnd) -> None:
        """After each epoch is measured, before its line is printed and its checkpoint written."""

    def on_run_end(self, run: RunFolder, result: Any) -> None:
        """After the unit has trained (a train.TrainResult), before the run is marked completed."""


WATCHERS: ContextVar[tuple[Callback, ...]] = ContextVar("convexp_watchers", default=())


@contextlib.contextmanager
def watching(*callbacks: Callback) -> Iterator[None]:
    """Every training unit run inside this block, in this process, calls `callbacks` too."""
    token = WATCHERS.set(WATCHERS.get() + callbacks)
    try:
        yield
    finally:
        WATCHERS.reset(token)


def watchers() -> tuple[Callback, ...]:
    return WATCHERS.get()

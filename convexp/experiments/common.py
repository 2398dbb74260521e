"""Pieces several experiments share: child runs of a study, and their failure handling."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from convexp.console import Reporter
from convexp.data import Splits
from convexp.errors import ConvexpError, DiskFull
from convexp.lifecycle import open_run
from convexp.models import to_device
from convexp.runs import RunFolder
from convexp.train import TrainResult, seed_everything, train_unit


def train_child(
    parent: RunFolder,
    command: str,
    name: str,
    child_config,
    make_model: Callable[[], nn.Module],
    splits: Splits,
    device: torch.device,
    reporter: Reporter,
    after_training: Callable[[RunFolder, TrainResult], None] | None = None,
    **train_options,
) -> tuple[RunFolder, TrainResult | None]:
    """Train one point of a study into parent/name; a failure is recorded there, not raised.

    The child folder is a complete run of its own (config.yaml with its own batch size and
    seed), opened through lifecycle.open_run like any run. Met again on resume, a completed
    child is read back and an interrupted one continues. `after_training(child, result)` writes
    what the study adds to the child (e.g. its confusion matrix) before it is marked completed.
    """
    child = parent.child(name)
    seed_everything(child_config.seed)
    model = to_device(make_model(), device)

    def train() -> TrainResult:
        result = train_unit(child, model, splits, child_config.train, seed=child_config.seed, device=device,
                            reporter=reporter, label=f"[{name}] ", **train_options)
        if after_training is not None:
            after_training(child, result)
        return result

    if child.status == "completed":
        return child, train()  # read back from its files, not trained again
    try:
        with open_run(child, command, child_config, device, reporter, name=name, parent=parent):
            return child, train()
    except DiskFull:
        raise  # every later child would fail the same way: the study stops here
    except ConvexpError as exc:  # e.g. a diverging loss: the child is marked failed, the study goes on
        reporter.line(f"[{name}] failed: {exc}")
    except torch.OutOfMemoryError:
        reporter.line(f"[{name}] failed: out of memory; the study goes on")
    return child, None


def finish_study(run: RunFolder, headline: dict, failed: list[str], total: int) -> dict:
    """A study is completed only when every child run is; otherwise it fails, naming them (resumable)."""
    if failed:
        run.update_summary(**headline)  # what the completed children give is kept all the same
        raise ConvexpError(f"{len(failed)} of {total} runs of this study failed ({', '.join(failed)}): each one's "
                           f"summary.json says why; fix the cause, then `convexp resume {run.path}` runs them again")
    return headline

"""Pieces several experiments share: child runs of a study, and their failure handling.

A study trains its unfinished children through the executor (here or in worker processes),
then reads every completed child back from its folder (`read_child`) to aggregate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from convexp.console import Reporter
from convexp.data import Splits
from convexp.errors import STOPS_THE_STUDY, ConvexpError
from convexp.execution import ChildTask, Execution, run_children
from convexp.lifecycle import open_run
from convexp.models import to_device
from convexp.runs import RunFolder
from convexp.train import (
    TrainResult,
    read_completed,
    seed_everything,
    train_unit,
)


def train_child(
    parent: RunFolder,
    command: str,
    name: str,
    child_config,
    make_model: Callable[[], nn.Module],
    splits: Splits,
    device: torch.device,
    reporter: Reporter,
    **train_options,
) -> tuple[RunFolder, TrainResult | None]:
    """Train one point of a study into parent/name; a failure is recorded there, not raised.

    The child folder is a complete run of its own (config.yaml with its own batch size and
    seed), opened through lifecycle.open_run like any run. Only unfinished children come here
    (train_children skips completed ones); an interrupted one continues. What the study adds to
    the child (e.g. its confusion matrix) comes in `callbacks` (train_options), whose on_run_end
    writes it before the child is marked completed.
    """
    child = parent.child(name)
    seed_everything(child_config.seed)
    model = to_device(make_model(), device)

    try:
        with open_run(child, command, child_config, device, reporter, name=name, parent=parent):
            return child, train_unit(child, model, splits, child_config.train, seed=child_config.seed, device=device,
                                     reporter=reporter, label=f"[{name}] ", **train_options)
    except STOPS_THE_STUDY:
        raise  # a full disk fails every later child; a bad checkpoint is for the user to move aside: stop
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


def train_children(run: RunFolder, points: dict, train_point: Callable, splits: Splits, device: torch.device,
                   execution: Execution, reporter: Reporter, work: Callable = lambda c: 1.0) -> None:
    """Train every point {child name: child config} not completed yet, through the executor.

    `train_point(parent, name, config, splits, device, reporter)` is the experiment's module-level
    function for one child. `splits`: on the device when the children train in this process;
    on the CPU for workers, which get them through shared memory and move them to their device.
    """
    tasks = [ChildTask(name, run.path / name, train_point, work=work(child_config), epochs=child_config.train.epochs,
                       kwargs={"parent": run.path, "name": name, "config": child_config}, device=str(device), data=splits)
             for name, child_config in points.items() if run.child_status(name) != "completed"]
    run_children(tasks, execution, reporter)


def read_child(parent: RunFolder, name: str, child_config, make_model: Callable[[], nn.Module], splits: Splits,
               device: torch.device) -> tuple[RunFolder, TrainResult | None]:
    """A child's results read back from its folder (test accuracy evaluated again), or None unless completed."""
    child = parent.child(name)
    if child.status != "completed":
        return child, None
    return child, read_completed(child, to_device(make_model(), device), splits, child_config.train)


def run_experiment_child(parent: Path, name: str, command: str, config, question: str, device: str,
                         reporter: Reporter) -> None:
    """A whole experiment run as a study's child (a reproduce step, a sweep point), here or in a
    worker process. A failure is recorded in its folder and the study goes on; a full disk stops it."""
    from convexp.experiments import spec
    from convexp.lifecycle import run_experiment

    study = RunFolder(parent)
    try:
        run_experiment(spec(command), config, study.child(name), torch.device(device), reporter,
                       name=name, parent=study, **({"question": question} if question else {}))
    except STOPS_THE_STUDY:
        raise
    except ConvexpError as exc:
        reporter.line(f"{name} failed: {exc}")

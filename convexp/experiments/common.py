"""Pieces several experiments share: child runs of a study, and their failure handling."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from convexp.config import dump_yaml
from convexp.console import Reporter
from convexp.data import Splits
from convexp.errors import ConvexpError
from convexp.models import to_device
from convexp.runs import RunFolder, now
from convexp.train import TrainResult, seed_everything, train_unit


def train_child(
    parent: RunFolder,
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
    seed). Met again on resume, a completed child is read back and an interrupted one continues.
    """
    child = parent.child(name)
    if not (child.path / "config.yaml").is_file():
        child.write_text("config.yaml", dump_yaml(child_config))
    seed_everything(child_config.seed)
    model = to_device(make_model(), device)
    with reporter.logging_to(child):
        try:
            result = train_unit(child, model, splits, child_config.train, seed=child_config.seed,
                                device=device, reporter=reporter, label=f"[{name}] ", **train_options)
        except ConvexpError as exc:  # e.g. a diverging loss: train_unit marked the child failed
            reporter.line(f"[{name}] failed: {exc}")
            return child, None
        except torch.OutOfMemoryError as exc:
            child.update_summary(status="failed", error=f"out of memory: {exc}", finished_at=now())
            reporter.line(f"[{name}] failed: out of memory; the study goes on")
            return child, None
    return child, result

"""A sweep's points: what one point is, the experiment's config at a point and seed (the one way
a sweep derives a child's config), and a child's validation metric read back from its folder.
Shared by the grid (sweep.py) and the search (sweep_search.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convexp.config import derive, from_dict
from convexp.errors import ConvexpError
from convexp.record import read_metrics

if TYPE_CHECKING:
    from convexp.experiments.sweep import SweepConfig


def grid_keys(key: str) -> list[str]:
    """The config keys a --grid key sets: 'train.lr' -> one; 'model.widths,model.channels' -> two,
    which take their values together, from one list per point."""
    return [part.strip() for part in key.split(",")]


@dataclass(frozen=True)
class Point:
    index: int
    values: dict[str, Any]  # swept key -> its value at this point

    @property
    def name(self) -> str:
        return f"p{self.index:02d}"

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


def point_config(config: SweepConfig, point: Point, seed: int, test: bool = False) -> Any:
    """The experiment's typed config at one point and seed, derived from the sweep's base through
    the loader's checks (an unknown key or a wrong type is the usual one-line error, naming the point)."""
    from convexp.experiments import spec

    experiment = spec(config.experiment)
    changes = {"seed": seed, "train.test_each_epoch": False, "train.test": test}
    if "seeds" in config.base:  # a study of seeds (varres-pool): this child's seed alone
        changes["seeds"] = [seed]
    for key, value in point.values.items():  # last: a point that sets `train` whole is checked as it is
        together = grid_keys(key)
        changes |= dict(zip(together, value if len(together) > 1 else [value]))
    try:
        child = derive(from_dict(experiment.config, copy.deepcopy(config.base), prefix=""), changes)
        if experiment.check_sweep_point is not None:
            experiment.check_sweep_point(child)
    except ConvexpError as exc:
        raise ConvexpError(f"sweep point {point.label()}: {exc}") from None
    return child


def leaf_runs(folder: Path) -> list[Path]:
    """The run folders that trained: the child itself, or (varres-pool) its own children."""
    if (folder / "metrics.csv").is_file():
        return [folder]
    return sorted(p.parent for p in folder.glob("*/metrics.csv"))


def validation_metric(folder: Path, select: str) -> float:
    rows = [row for leaf in leaf_runs(folder) for row in read_metrics(leaf)]
    if select == "best_val_accuracy":
        return max(float(row["val_accuracy"]) for row in rows)
    return float(rows[-1][select])  # the final epoch's

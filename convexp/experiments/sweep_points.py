"""A sweep's config and its points: SweepConfig (what `convexp sweep` reads and checks), what one
point is, the experiment's config at a point and seed (the one way a sweep derives a child's
config), and a child's validation metric read back from its folder. Shared by the grid
(sweep.py) and the search (sweep_search.py), which both import from here and never each other."""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from convexp.config import Invalid, RunConfig, derive, from_dict, require_seeds
from convexp.errors import ConvexpError
from convexp.record import read_metrics
from convexp.search import TPE_STARTUP_TRIALS


def grid_keys(key: str) -> list[str]:
    """The config keys a --grid key sets: 'train.lr' -> one; 'model.widths,model.channels' -> two,
    which take their values together, from one list per point."""
    return [part.strip() for part in key.split(",")]


SWEEP_OWNED_KEYS = {  # set by the sweep itself for every run: sweeping them would mislabel the points
    "seed": "the seeds of every point are --seeds",
    "seeds": "the seeds of every point are --seeds",
    "device": "one device runs the whole sweep: --device",
    "train.test": "the sweep tests only the chosen point, after the choice",
    "train.test_each_epoch": "the sweep tests only the chosen point, after the choice",
}


def sweepable() -> list[str]:
    """The experiments whose spec says `convexp sweep` may vary their keys."""
    from convexp.experiments import specs

    return [s.name for s in specs() if s.sweepable]


def require_sweepable(experiment: str) -> None:
    if experiment not in sweepable():
        raise ConvexpError(f"cannot sweep {experiment!r}: choose one of {', '.join(sweepable())}")


@dataclass
class SweepConfig(RunConfig):
    """`convexp sweep`: a grid over any keys of one experiment's config, each point trained once
    per seed; the point is chosen on validation, and only the chosen point is tested. Its own
    `seed` draws the --random points."""

    experiment: str = "varres-pool"
    base: dict[str, Any] = field(default_factory=dict)  # the experiment's own config (file + --set), complete
    grid: dict[str, Any] = field(default_factory=dict)  # config key -> the values it takes
    random: int = 0  # 0: every point of the grid; N: N of its points, drawn with `seed`
    seeds: list[int] = field(default_factory=lambda: [0])
    select: Literal["best_val_accuracy", "val_accuracy", "val_loss"] = "best_val_accuracy"
    # A search (convexp/search.py): --space ranges, drawn by Optuna's sampler (seeded with `seed`)
    # for `trials` points; --grid lists are choices there. The pruner stops hopeless trials.
    space: dict[str, str] = field(default_factory=dict)  # config key -> its range, e.g. "loguniform(1e-4, 1e-2)"
    sampler: Literal["grid", "random", "tpe"] = "grid"
    trials: int = 0
    pruner: Literal["none", "median", "hyperband"] = "none"
    # A search draws no new trial once its trials have trained this many epochs in all (every
    # seed's, pruned ones' included): searches with and without a pruner compared at one cost.
    # 0: no budget, --trials alone.
    epoch_budget: int = 0
    # tpe: the trials drawn at random before it models the ones so far (Optuna's n_startup_trials,
    # 10 by default). A search of about 10 trials never leaves them: give it a few, e.g. 4.
    startup_trials: int = TPE_STARTUP_TRIALS

    def __post_init__(self):
        super().__post_init__()
        require_sweepable(self.experiment)
        require_seeds("seeds", self.seeds)
        if not self.grid and not self.space:
            raise Invalid("grid", "a sweep needs at least one --grid KEY=[values], e.g. --grid train.lr=[0.001,0.0005], "
                                  "or --space KEY=RANGE")
        self.check_search()
        for key, values in self.grid.items():
            together = grid_keys(key)
            if any(not part for part in together):
                raise Invalid("grid", f"--grid {key}: an empty key; join keys that move together with commas, "
                                      "e.g. model.widths,model.channels=[[[16, 32], 80], [[16, 32, 32], 49]]")
            for part in together:
                if part in SWEEP_OWNED_KEYS:
                    raise Invalid("grid", f"--grid {part}: {SWEEP_OWNED_KEYS[part]}")
            if not isinstance(values, list) or not values:
                raise Invalid("grid", f"--grid {key} needs a non-empty list of values in brackets, e.g. {key}=[1, 2]; "
                                      f"got {values!r}")
            if len(together) > 1 and any(not isinstance(v, list) or len(v) != len(together) for v in values):
                raise Invalid("grid", f"--grid {key} moves {len(together)} keys together: each value must list "
                                      f"{len(together)} values in that order, e.g. [[a1, b1], [a2, b2]]; got {values!r}")
            repeated = [v for i, v in enumerate(values) if v in values[:i]]
            if repeated:
                raise Invalid("grid", f"--grid {key} lists {repeated[0]!r} more than once: each point would run twice")
        every = [part for key in self.grid for part in grid_keys(key)]
        twice = [part for i, part in enumerate(every) if part in every[:i]]
        if twice:
            raise Invalid("grid", f"--grid sets {twice[0]} in two places: give each key once")
        if self.random < 0:
            raise Invalid("random", f"--random must be 0 (the whole grid) or a number of points; got {self.random}")

    def check_search(self) -> None:
        from convexp.search import parse_range

        if self.sampler == "grid":
            if self.space:
                raise Invalid("space", "--space ranges need a sampler that draws from them: --sampler tpe or random")
            if self.pruner != "none":
                raise Invalid("pruner", "--pruner needs a search (--sampler tpe or random): a grid runs every point whole")
            if self.epoch_budget:
                raise Invalid("epoch_budget", "--epoch-budget bounds a search (--sampler tpe or random); a grid "
                                              "runs every point")
            if self.trials:
                raise Invalid("trials", "--trials counts a search's points (--sampler tpe or random); a grid runs "
                                        "every point, or --random N of them")
            return
        if self.startup_trials != TPE_STARTUP_TRIALS and self.sampler != "tpe":
            raise Invalid("startup_trials", f"--startup-trials is tpe's (the random trials before it models); "
                                            f"--sampler {self.sampler} draws every trial its own way")
        if self.startup_trials < 1:
            raise Invalid("startup_trials", f"--startup-trials must be 1 or more; got {self.startup_trials}")
        if self.epoch_budget < 0:
            raise Invalid("epoch_budget", f"--epoch-budget must be 0 (none) or a number of epochs; got {self.epoch_budget}")
        if self.trials < 1:
            raise Invalid("trials", f"--sampler {self.sampler} needs --trials N, the number of points to try; got {self.trials}")
        if self.random:
            raise Invalid("random", f"--random draws from a grid; with --sampler {self.sampler}, --trials says how many points")
        for key, text in self.space.items():
            parse_range(key, text)
            for part in grid_keys(key):
                if part in SWEEP_OWNED_KEYS:
                    raise Invalid("space", f"--space {part}: {SWEEP_OWNED_KEYS[part]}")
        every = [part for key in [*self.grid, *self.space] for part in grid_keys(key)]
        twice = [part for i, part in enumerate(every) if part in every[:i]]
        if twice:
            raise Invalid("space", f"--grid and --space set {twice[0]} in two places: give each key once")

    def grid_size(self) -> int:
        """How many points the grid's product has."""
        return math.prod(len(values) for values in self.grid.values())

    def point_count(self) -> int:
        """How many points the sweep trains: the search's trials, --random of the grid, or all of it."""
        if self.searches:
            return self.trials
        return min(self.random, self.grid_size()) if self.random else self.grid_size()

    @property
    def searches(self) -> bool:
        return self.sampler != "grid"

    def swept_keys(self) -> list[str]:
        return [*self.grid, *self.space]


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


# -- how large a sweep is ---------------------------------------------------------------------------


# Above this many runs a sweep asks first (a typo in a grid can mean days of training); above the
# ceiling it is refused: its points could not even be listed and checked before training.
ASK_ABOVE_RUNS = 500
MAX_RUNS = 10_000


def check_size(config: SweepConfig) -> None:
    if not config.searches and config.grid_size() > sys.maxsize:  # --random draws indices from a range
        raise ConvexpError(f"the grid has {config.grid_size():.3g} points, more than a draw can index: "
                           "search the ranges instead (--space KEY=RANGE --sampler tpe --trials N)")
    runs, size = sweep_size(config)
    if runs > MAX_RUNS:
        raise ConvexpError(f"this sweep has {size}, more than the {MAX_RUNS:,} a sweep may hold: draw some with "
                           "--random N, or search with --sampler tpe --trials N")


def sweep_size(config: SweepConfig) -> tuple[int, str]:
    """(runs, 'P points x S seed(s) = R runs'): what the size checks count and say. Under an epoch
    budget a run that trains an epoch spends one of it, so the budget bounds the runs too (about:
    trials already drawn finish, and a run that fails in its first epoch spends none)."""
    points = config.point_count()
    runs = points * len(config.seeds)
    size = f"{points:,} points x {len(config.seeds)} seed(s) = {runs:,} runs"
    if config.epoch_budget and config.epoch_budget < runs:
        return config.epoch_budget, f"{size}, about {config.epoch_budget:,} at most under --epoch-budget {config.epoch_budget:,}"
    return runs, size


def confirm_size(config: SweepConfig, yes: bool) -> None:
    """A sweep of more than ASK_ABOVE_RUNS runs starts only with --yes, or when a terminal says yes."""
    runs, size = sweep_size(config)
    if runs > ASK_ABOVE_RUNS:
        ask_first(f"this sweep trains {size}", yes, "start it", "fewer points (--random N, --trials N)")


def ask_first(what: str, yes: bool, go: str, fewer: str) -> None:
    """Go on with --yes, or when a terminal says yes; without a terminal, one line asking for --yes."""
    import typer

    if yes:
        return
    if not sys.stdin.isatty():
        raise ConvexpError(f"{what}: pass --yes to {go}, or {fewer}")
    if not typer.confirm(f"{what}; {go}?", default=False):
        raise ConvexpError(f"{what}: stopped here (pass --yes to {go} without asking)")

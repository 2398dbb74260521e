"""`convexp sweep`'s command line as a checked SweepConfig: the experiment's own config (its YAML
file and --set) as the base, --grid, --random, --seeds and --select around it, and a search's
--space, --sampler, --trials and --pruner (convexp/search.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from convexp.config import derive, from_dict, parse_value, to_dict
from convexp.errors import ConvexpError
from convexp.experiments.sweep import check_points
from convexp.experiments.sweep_points import SweepConfig, require_sweepable


def sweep_config(experiment: str, grid: list[str], random: int, seeds: str | None, select: str, options,
                 space: list[str] = (), sampler: str | None = None, trials: int = 0, pruner: str = "none",
                 yes: bool = False, epoch_budget: int = 0, startup_trials: int = 10) -> SweepConfig:
    """The sweep the command line asks for, checked whole; `yes`: a large one needs no confirmation
    (confirm_size), which is asked before its points are checked, the slow part of a large one."""
    from convexp.application import load_experiment_config
    from convexp.experiments import spec
    from convexp.search import parse_space, require_optuna

    require_sweepable(experiment)
    base = load_experiment_config(spec(experiment), options)
    sampler = sampler or ("tpe" if space else "grid")  # grid: today's sweep, when only --grid is given
    raw = {"experiment": experiment, "base": to_dict(base), "grid": parse_grid(grid), "random": random,
           "seeds": parse_seeds(seeds) if seeds is not None else config_seeds(base), "select": select,
           "device": base.device, "seed": base.seed,  # the sampler's (and --random's): a sweep repeats
           "space": parse_space(list(space)), "sampler": sampler, "trials": trials,
           "pruner": pruner, "epoch_budget": epoch_budget, "startup_trials": startup_trials}
    config = from_dict(SweepConfig, raw, prefix="")
    if config.searches:
        require_optuna(config.sampler)
        if config.pruner != "none" and options.executor == "ray":
            from convexp.experiments.sweep_search import REFUSE_RAY_PRUNING

            raise ConvexpError(REFUSE_RAY_PRUNING)
        if config.pruner != "none" and spec(experiment).study:
            raise ConvexpError(f"--pruner stops a trial's training runs; {experiment} is a study of its own runs, "
                               "which it does not prune: use --pruner none")
    check_size(config)
    confirm_size(config, yes)
    check_points(config)  # every point's config (a search: every range), before anything runs
    return config


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


def extended_search(config: object, trials: int, epoch_budget: int, folder: Path, completed: bool,
                    yes: bool = False) -> SweepConfig:
    """`convexp resume SWEEP --trials N --epoch-budget E`: the search in `folder` with its limits
    changed (0: as it was), checked as a new sweep's are. Optuna's study keeps every trial, so a
    completed search goes on drawing where it ended; its choice and test are made again over all."""
    from convexp.experiments.sweep_search import epochs_trained
    from convexp.search import counted_in

    if not isinstance(config, SweepConfig) or not config.searches:
        raise ConvexpError(f"--trials and --epoch-budget change how far a search goes (a sweep with --sampler random "
                           f"or tpe); {folder} is not a search")
    for option, value in (("--trials", trials), ("--epoch-budget", epoch_budget)):
        if value < 0:
            raise ConvexpError(f"{option} must be a whole number, 0 or more (0 or left out: as it was); got {value}")
    extended = derive(config, {key: value for key, value in (("trials", trials), ("epoch_budget", epoch_budget)) if value})
    runs, size = sweep_size(extended)
    if runs > MAX_RUNS:
        raise ConvexpError(f"--trials {extended.trials} makes this search {size}, more than the {MAX_RUNS:,} a sweep may "
                           "hold: pass fewer trials")
    so_far = counted_in(folder)  # trials drawn that did not fail
    if completed and extended.trials <= so_far:
        raise ConvexpError(f"{folder} completed its search with {so_far} trials (failed ones aside): pass --trials "
                           f"above {so_far} to search on")
    if extended.trials < so_far:
        raise ConvexpError(f"{folder} has drawn {so_far} trials already (failed ones aside): pass --trials {so_far} "
                           "or more")
    spent = epochs_trained(folder)
    if completed and extended.epoch_budget and spent >= extended.epoch_budget:
        raise ConvexpError(f"{folder} has already trained {spent} epochs, all of --epoch-budget "
                           f"{extended.epoch_budget}: pass --epoch-budget above {spent} to search on")
    if runs > ASK_ABOVE_RUNS:  # as a new sweep asks, counting the runs it will have in all
        ask_first(f"this search would hold {size}", yes, "go on", "fewer --trials")
    return extended


def parse_grid(items: list[str]) -> dict:
    grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConvexpError(f"--grid {item!r} is not of the form KEY=[v1, v2]: e.g. --grid 'train.lr=[0.001, 0.0005]'")
        if key.strip() in grid:
            raise ConvexpError(f"--grid {key.strip()} is given twice: list all its values once, KEY=[v1, v2, ...]")
        grid[key.strip()] = parse_value(text)
    return grid


def parse_seeds(text: str) -> list:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConvexpError(f"--seeds {text!r} must be whole numbers separated by commas, e.g. --seeds 0,1,2") from None


def config_seeds(base) -> list[int]:
    """Without --seeds, the experiment's own: its `seeds` list (varres-pool), else its `seed`;
    so --config configs/varres-best.yaml sweeps its three seeds, and --set seed=7 is used."""
    return list(getattr(base, "seeds", None) or [base.seed])

"""`convexp sweep`'s command line as a checked SweepConfig: the experiment's own config (its YAML
file and --set) as the base, --grid, --random, --seeds and --select around it, and a search's
--space, --sampler, --trials and --pruner (convexp/search.py)."""

from __future__ import annotations

from convexp.config import from_dict, parse_value, to_dict
from convexp.errors import ConvexpError
from convexp.experiments.sweep import check_points
from convexp.experiments.sweep_points import (
    SweepConfig,
    check_size,
    confirm_size,
    require_sweepable,
)
from convexp.search import TPE_STARTUP_TRIALS


def sweep_config(experiment: str, grid: list[str], random: int, seeds: str | None, select: str, options,
                 space: list[str] = (), sampler: str | None = None, trials: int = 0, pruner: str = "none",
                 yes: bool = False, epoch_budget: int = 0, startup_trials: int = TPE_STARTUP_TRIALS) -> SweepConfig:
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

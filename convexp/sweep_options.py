"""`convexp sweep`'s command line as a checked SweepConfig: the experiment's own config (its YAML
file and --set) as the base, --grid, --random, --seeds and --select around it."""

from __future__ import annotations

from convexp.config import from_dict, parse_value, to_dict
from convexp.errors import ConvexpError
from convexp.experiments.sweep import SweepConfig, check_points, require_sweepable


def sweep_config(experiment: str, grid: list[str], random: int, seeds: str | None, select: str, options) -> SweepConfig:
    from convexp.application import load_experiment_config
    from convexp.experiments import spec

    require_sweepable(experiment)
    base = load_experiment_config(spec(experiment), options)
    raw = {"experiment": experiment, "base": to_dict(base), "grid": parse_grid(grid), "random": random,
           "seeds": parse_seeds(seeds) if seeds is not None else config_seeds(base), "select": select,
           "device": base.device}
    config = from_dict(SweepConfig, raw, prefix="")
    check_points(config)  # every point's config, before anything runs
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

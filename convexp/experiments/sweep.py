"""`convexp sweep`: any keys of one experiment's config over a grid, each point trained once per
seed; the point is chosen on validation, and only the chosen point is tested, afterwards.

Every (point, seed) is a complete run of that experiment in its own child folder `pNN-seedS`,
trained with its test evaluation off, through the executor like any study's children (--jobs,
--executor ray) and resumable like them. The ranking reads each child's validation metrics from
its metrics.csv; then the best point's children (and only theirs) are evaluated on the test set.
A search (--space, --sampler random|tpe, --pruner) draws its points instead: sweep_search.py.
"""

from __future__ import annotations

import io
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from convexp.config import (
    Invalid,
    RunConfig,
    VarresData,
    require_seeds,
)
from convexp.errors import ConvexpError
from convexp.experiments.sweep_points import (
    Point,
    grid_keys,
    leaf_runs,
    point_config,
    validation_metric,
)
from convexp.record import RunRecord
from convexp.runs import RunFolder
from convexp.spec import Experiment
from convexp.stats import mean_std

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.execution import Execution

LOWER_IS_BETTER = {"val_loss"}


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
            if self.trials:
                raise Invalid("trials", "--trials counts a search's points (--sampler tpe or random); a grid runs "
                                        "every point, or --random N of them")
            return
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

    @property
    def searches(self) -> bool:
        return self.sampler != "grid"

    def swept_keys(self) -> list[str]:
        return [*self.grid, *self.space]


def grid_points(config: SweepConfig) -> list[Point]:
    """Every point of the grid (keys in the order given), or `random` of them drawn with `seed`."""
    keys = list(config.grid)
    combos = list(itertools.product(*(config.grid[k] for k in keys)))
    chosen = range(len(combos))
    if 0 < config.random < len(combos):
        chosen = sorted(random.Random(config.seed).sample(range(len(combos)), config.random))
    return [Point(i, dict(zip(keys, combos[i]))) for i in chosen]


def check_points(config: SweepConfig) -> list[Point]:
    """Every point's config built once, before anything runs (a search: each range's ends, each choice)."""
    if config.searches:
        from convexp.experiments.sweep_search import check_ranges

        check_ranges(config)
        return []
    points = grid_points(config)
    for point in points:
        point_config(config, point, config.seeds[0])
    return points


def run(config: SweepConfig, run: RunFolder, device: torch.device, reporter: Reporter,
        execution: Execution | None = None) -> dict:
    from convexp.config import dump_yaml
    from convexp.execution import SEQUENTIAL, ChildTask, run_children
    from convexp.experiments.common import finish_study, run_experiment_child
    from convexp.varres import warm_cache

    execution = execution or SEQUENTIAL
    if config.searches:
        from convexp.experiments.sweep_search import search_points

        points = search_points(config, run, device, reporter, execution)
    else:
        points = check_points(config)
    children = {f"{p.name}-seed{s}": (p, s) for p in points for s in config.seeds}
    if config.random > len(points):
        reporter.line(f"--random {config.random} is more than the grid's {len(points)} point(s): every point runs")
    if not config.searches:
        reporter.line(f"sweep of {config.experiment}: {len(points)} point(s) x {len(config.seeds)} seed(s) = "
                      f"{len(children)} runs, chosen by {config.select} on validation")
    unfinished = {name: point_config(config, p, s) for name, (p, s) in children.items()
                  if run.child(name).status not in ("completed", "pruned")}
    tasks = [ChildTask(name, run.path / name, run_experiment_child, epochs=child_config.train.epochs, device=str(device),
                       kwargs={"parent": run.path, "name": name, "command": config.experiment,
                               "config": child_config, "question": ""})
             for name, child_config in unfinished.items()]
    if tasks and isinstance(getattr(tasks[0].kwargs["config"], "data", None), VarresData):
        warm_cache(Path(config.base["data"]["root"]))
    if not config.searches:  # a search has trained its trials (and told the study how each ended)
        run_children(tasks, execution, reporter)
    ranking = rank(config, points, run)
    run.write_csv("points.csv", [{"point": r["point"].name, **r["point"].values, f"{config.select}_mean": r["mean"],
                                  f"{config.select}_std": r["std"], "runs": r["runs"], "failed": r["failed"],
                                  "pruned": r["pruned"]}
                                 for r in ranking])
    write_plots(run, config, ranking)
    show_ranking(reporter, config, ranking)
    # A search's failed trial is one of its answers (told to the study as such), not a failed sweep.
    failed = [name for name in children if run.child(name).status not in ("completed", "pruned")]
    if config.searches and any(r["runs"] for r in ranking):
        failed = []
    tested = [r for r in ranking if r["runs"]]
    if not tested:
        return finish_study(run, {"ranking": []}, failed, len(children))
    best = tested[0]["point"]
    test = test_chosen(config, best, run, device, reporter)
    best_config = run.write_text("best.yaml", dump_yaml(point_config(config, best, config.seeds[0], test=True)))
    reporter.line(f"chosen on validation: {best.name} ({best.label()}), {config.select} "
                  f"{tested[0]['mean']:.4f} ± {tested[0]['std']:.4f}; test accuracy, measured for this point "
                  f"only, after the choice: {test['mean']:.4f} ± {test['std']:.4f} (n={test['runs']}); "
                  f"its config: {best_config} (use it with --config)")
    headline = {"experiment": config.experiment, "select": config.select,
                "best": {"point": best.name, "values": best.values, config.select: tested[0]["mean"],
                         f"{config.select}_std": tested[0]["std"], "test_accuracy": test,
                         "tested": "test split evaluated for this point only, after the choice on validation"},
                "ranking": [{"point": r["point"].name, "values": r["point"].values, "mean": r["mean"], "std": r["std"],
                             "runs": r["runs"], "pruned": r["pruned"]} for r in ranking]}
    if config.searches:
        from convexp.experiments.sweep_search import search_headline

        headline["search"] = search_headline(config, run)
    return finish_study(run, headline, failed, len(children))


# -- reading the children back ---------------------------------------------------------------------


def rank(config: SweepConfig, points: list[Point], run: RunFolder) -> list[dict]:
    """Points by the mean over seeds of the selection metric, best first (points with no
    completed run last)."""
    ranking = []
    for point in points:
        statuses = {s: RunRecord.read(run.path / f"{point.name}-seed{s}").status for s in config.seeds}
        values = [validation_metric(run.path / f"{point.name}-seed{s}", config.select) for s in config.seeds
                  if statuses[s] == "completed"]
        pruned = sum(status == "pruned" for status in statuses.values())
        mean, std = mean_std(values) if values else (float("nan"), float("nan"))
        ranking.append({"point": point, "mean": mean, "std": std, "runs": len(values), "pruned": pruned,
                        "failed": len(config.seeds) - len(values) - pruned})
    sign = 1 if config.select in LOWER_IS_BETTER else -1
    return sorted(ranking, key=lambda r: (r["runs"] == 0, sign * r["mean"] if r["runs"] else 0))


def test_chosen(config: SweepConfig, best: Point, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    """The chosen point's runs, each read back with its test evaluation on: the only test numbers of the sweep."""
    from rich.console import Console

    from convexp.console import Reporter
    from convexp.experiments import spec

    experiment = spec(config.experiment)
    accuracies = []
    for seed in config.seeds:
        child = run.child(f"{best.name}-seed{seed}")
        if child.status != "completed":
            continue
        silent = Reporter(quiet=True, console=Console(file=io.StringIO()))  # its tables are not the sweep's
        headline = experiment.run(point_config(config, best, seed, test=True), child, device, silent)
        child.update_summary(**(headline or {}))  # e.g. varres-pool's per-resolution test accuracy
        for leaf in leaf_runs(child.path):
            summary = RunFolder(leaf).update_summary(tested_after_choice=True)
            accuracies.append(summary["test_accuracy"])
    mean, std = mean_std(accuracies)
    return {"mean": mean, "std": std, "runs": len(accuracies), "per_seed": accuracies}


# -- output ---------------------------------------------------------------------------------------


def write_plots(run: RunFolder, config: SweepConfig, ranking: list[dict]) -> None:
    from convexp import plots

    done = [r for r in ranking if r["runs"]]
    for key in config.swept_keys():
        safe = key.replace(".", "_").replace(",", "+").replace(" ", "")
        plots.metric_against([(r["point"].values[key], r["mean"], r["std"]) for r in done], key, config.select,
                             run.plots / f"{config.select}_against_{safe}.png")


def show_ranking(reporter: Reporter, config: SweepConfig, ranking: list[dict]) -> None:
    keys = config.swept_keys()
    rows = [[r["point"].name, *(format_value(r["point"].values[k]) for k in keys),
             f"{r['mean']:.4f} ± {r['std']:.4f}" if r["runs"] else "-", r["runs"], r["failed"], r["pruned"]]
            for r in ranking]
    reporter.table(f"sweep of {config.experiment}: points by {config.select} on validation (mean ± std over seeds)",
                   ["point", *keys, config.select, "runs", "failed", "pruned"], rows)


def format_value(value: Any) -> Any:
    """A drawn float (2.3456789e-05) as few digits as tell it apart."""
    return f"{value:.4g}" if isinstance(value, float) else value


def chosen_point(summary: dict) -> str | None:
    """`convexp runs`: the point chosen on validation, and its test accuracy."""
    best = summary.get("best")
    if not best:
        return None
    pruned = summary.get("search", {}).get("pruned")
    return (f"{best['point']}: {summary['select']} {best[summary['select']]:.4f}, test {best['test_accuracy']['mean']:.4f}"
            + (f" ({pruned} pruned)" if pruned else ""))


SPEC = Experiment(
    name="sweep",
    help="Any config keys of one experiment over a grid, seeds per point; chosen on validation, then only the best point is tested.",
    config=SweepConfig,
    run=run,
    study=True,
    command=False,  # its command line (EXPERIMENT, --grid, --seeds, ...) is cli.sweep's
    not_reported="is a sweep: its ranking is in points.csv and summary.json, the chosen config in best.yaml; "
                 "`convexp report` sets the study's runs beside the seed report",
    key_metric=chosen_point,
)

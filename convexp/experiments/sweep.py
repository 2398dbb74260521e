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
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convexp.config import VarresData
from convexp.experiments.sweep_points import (  # SweepConfig: what `convexp sweep` reads, there with its points
    Point,
    SweepConfig,
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


def grid_points(config: SweepConfig) -> list[Point]:
    """Every point of the grid (keys in the order given, the last varying fastest), or `random` of
    them drawn with `seed`. Points are built from their index, never the whole product listed, so
    --random 20 of a grid of 10^12 points costs 20 points."""
    keys = list(config.grid)
    total = config.grid_size()
    chosen = range(total)
    if 0 < config.random < total:
        chosen = sorted(random.Random(config.seed).sample(range(total), config.random))
    return [Point(i, grid_values(config.grid, keys, i)) for i in chosen]


def grid_values(grid: dict, keys: list[str], index: int) -> dict:
    """The index-th point of itertools.product over the keys' values."""
    values = {}
    for key in reversed(keys):
        index, position = divmod(index, len(grid[key]))
        values[key] = grid[key][position]
    return {key: values[key] for key in keys}


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
                  if run.child_status(name) not in ("completed", "pruned")}
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
    failed = [name for name in children if run.child_status(name) not in ("completed", "pruned")]
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

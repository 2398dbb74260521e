"""`convexp sweep --space/--sampler/--pruner`: Optuna's trials (convexp/search.py), each a sweep
point trained like the grid's, its seeds as child runs through the executor, --jobs trials at a
time; the study in the sweep folder is told how each ended, so `convexp resume` goes on from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from convexp.config import derive
from convexp.errors import ConvexpError
from convexp.experiments.sweep_points import (
    ASK_ABOVE_RUNS,
    MAX_RUNS,
    Point,
    SweepConfig,
    ask_first,
    leaf_runs,
    point_config,
    sweep_size,
    validation_metric,
)
from convexp.record import read_metrics
from convexp.runs import RunFolder
from convexp.stats import mean_std

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.execution import Execution
    from convexp.experiments.sweep_points import SweepConfig


def search_ranges(config: SweepConfig) -> dict:
    """--space ranges, and --grid lists as choices."""
    from convexp.search import Range, parse_range

    return ({key: Range("choice", choices=tuple(values)) for key, values in config.grid.items()}
            | {key: parse_range(key, text) for key, text in config.space.items()})


def check_ranges(config: SweepConfig) -> None:
    """Each range's ends (each choice) through the experiment's config: the key exists and takes that type."""
    for key, values in search_ranges(config).items():
        for value in values.ends():
            try:
                point_config(config, Point(0, {key: value}), config.seeds[0])
            except ConvexpError as exc:
                given = f"{key}={config.space[key]}" if key in config.space else key
                raise ConvexpError(f"--{'space' if key in config.space else 'grid'} {given}: {exc}") from None


def search_points(config: SweepConfig, run: RunFolder, device: torch.device, reporter: Reporter,
                  execution: Execution) -> list[Point]:
    """Trials drawn by the sampler, --jobs at a time, each trained (its seeds as child runs) and told
    to the study in the sweep folder; an interrupted sweep's running trials train again first.
    Returns every trial's point, for the same ranking as the grid's."""
    from convexp import search as searching
    from convexp.execution import ChildTask, run_children
    from convexp.experiments.common import run_experiment_child

    if config.pruner != "none" and execution.executor == "ray":
        raise ConvexpError(REFUSE_RAY_PRUNING)
    ranges = search_ranges(config)
    epochs = point_config(config, Point(0, {}), config.seeds[0]).train.epochs
    study = searching.open_study(run.path, config.sampler, config.pruner, config.seed, searching.direction(config.select), epochs,
                                 config.startup_trials)
    reporter.line(f"search of {config.experiment}: {config.trials} trial(s) drawn by {config.sampler} "
                  f"(pruner: {config.pruner}) x {len(config.seeds)} seed(s), chosen by {config.select} on validation; "
                  f"the study: {run.path / searching.STUDY_FILE}")

    def train(batch: list) -> dict[int, float | str]:
        tasks = []
        for drawn in batch:
            point = Point(drawn.number, drawn.values)
            for seed in config.seeds:
                name = f"{point.name}-seed{seed}"
                if run.child_status(name) in ("completed", "pruned"):
                    continue
                child_config = point_config(config, point, seed)
                kwargs = {"parent": run.path, "name": name, "command": config.experiment, "config": child_config,
                          "question": ""}
                function = run_experiment_child
                if config.pruner != "none":
                    function = run_trial_child
                    kwargs["pruning"] = searching.Pruning(str(run.path), drawn.trial_id, config.pruner, config.select,
                                                          epochs, reports=seed == config.seeds[0])
                tasks.append(ChildTask(name, run.path / name, function, kwargs=kwargs, epochs=child_config.train.epochs,
                                       device=str(device)))
        run_children(tasks, execution, reporter)
        return {drawn.number: trial_outcome(config, run, Point(drawn.number, drawn.values)) for drawn in batch}

    def budget_left(planned: int) -> bool:
        """Room for one more trial: the epochs trained, and those the batch's trials will train, below the budget."""
        if not config.epoch_budget:
            return True
        return epochs_trained(run.path) + planned * epochs * len(config.seeds) < config.epoch_budget

    try:
        searching.search(study, ranges, config.trials, max(1, execution.jobs), train, budget_left)
    except searching.TrialsKeepFailing as exc:
        names = [f"{Point(exc.last, {}).name}-seed{seed}" for seed in config.seeds]
        last = next((name for name in names if run.child_status(name) == "failed"), names[0])
        error = run.child(last).read_summary().get("error", "see its log.txt")
        raise ConvexpError(f"{exc}, the last ({last}) with: {error}; fix that and `convexp resume {run.path}`, "
                           "or start a new sweep if the cause is in its config") from None
    return [Point(drawn.number, drawn.values) for drawn in searching.every_trial(study, ranges)]


REFUSE_RAY_PRUNING = ("--pruner with --executor ray is not supported: a Ray task trains its run in a folder of its own, "
                      "maybe on another machine, and sends it back only when done, so it cannot report each epoch "
                      "to the study in the sweep folder; use --executor local (any --jobs), or --pruner none on Ray")


def epochs_trained(sweep: Path) -> int:
    """Epochs every trial's runs have trained so far (their metrics.csv rows), pruned ones' too."""
    return sum(len(read_metrics(leaf)) for child in sweep.glob("p*-seed*") for leaf in leaf_runs(child))


def trial_outcome(config: SweepConfig, run: RunFolder, point: Point) -> float | str:
    """What the study is told: the mean over seeds of the selection metric, else pruned, diverged
    (a loss that became inf or NaN: an answer about these values) or failed."""
    statuses = [run.child_status(f"{point.name}-seed{seed}") for seed in config.seeds]
    if "pruned" in statuses:
        return "pruned"
    if any(run.child(f"{point.name}-seed{seed}").read_summary().get("diverged") for seed, status
           in zip(config.seeds, statuses) if status == "failed"):
        return "diverged"
    if any(status != "completed" for status in statuses):
        return "failed"
    return mean_std([validation_metric(run.path / f"{point.name}-seed{seed}", config.select)
                     for seed in config.seeds])[0]


def run_trial_child(parent: Path, name: str, command: str, config, question: str, pruning, device: str,
                    reporter: Reporter) -> None:
    """A trial's child run, watched by the pruner (here or in a worker process); pruned is recorded
    in its folder (lifecycle.open_run) and the sweep goes on."""
    from convexp.callbacks import watching
    from convexp.experiments.common import run_experiment_child
    from convexp.search import PruneWatcher, TrialPruned

    try:
        with watching(PruneWatcher(pruning)):
            run_experiment_child(parent, name, command, config, question, device, reporter)
    except TrialPruned as exc:
        reporter.line(f"{name} {exc}")


def search_headline(config: SweepConfig, run: RunFolder) -> dict:
    from convexp import search as searching

    return {"sampler": config.sampler, "pruner": config.pruner, "trials": config.trials,
            "epoch_budget": config.epoch_budget, "epochs_trained": epochs_trained(run.path),
            **({"startup_trials": config.startup_trials} if config.sampler == "tpe" else {}),
            "study": searching.STUDY_FILE, **{state: 0 for state in ("completed", "pruned", "failed")},
            **searching.counts(searching.load_study(run.path))}


def extended_search(config: object, trials: int, epoch_budget: int, folder: Path, completed: bool,
                    yes: bool = False) -> SweepConfig:
    """`convexp resume SWEEP --trials N --epoch-budget E`: the search in `folder` with its limits
    changed (0: as it was), checked as a new sweep's are. Optuna's study keeps every trial, so a
    completed search goes on drawing where it ended; its choice and test are made again over all."""
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

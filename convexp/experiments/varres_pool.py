"""`convexp varres-pool`: questions 11, 14-17, a global-pooling net trained on native resolutions.

One child run per (pooling, seed); batches come from one resolution bucket at a time, buckets
interleaved in a fresh random order every epoch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from convexp import plots
from convexp.augment import build_pipeline, preview
from convexp.config import VarresPoolConfig
from convexp.console import Reporter
from convexp.data import Splits
from convexp.experiments.classification import classification_breakdown, write_breakdown
from convexp.executor import SEQUENTIAL, Execution
from convexp.experiments.common import finish_study, read_child, train_child, train_children
from convexp.models import VariableInputNet, count_parameters
from convexp.runs import RunFolder
from convexp.stats import mean_std
from convexp.varres import load_varres

Config = VarresPoolConfig  # what `convexp varres-pool` reads from configs/varres-pool.yaml
STUDY = True  # its child runs can run in parallel (--jobs)


def run(config: VarresPoolConfig, run: RunFolder, device: torch.device, reporter: Reporter,
        execution: Execution = SEQUENTIAL) -> dict:
    train, val, test = load_varres(config.data)
    cpu_splits = Splits(train, val, test, config.data.root)
    here = cpu_splits.to(device) if execution.in_this_process else None  # workers: no device copy held here
    n = config.model.channels
    parameters = count_parameters(network(config))  # pooling adds none: the same for every child
    blocks = f"blocks {[*config.model.widths, n]}, norm {config.model.norm}"
    reporter.line(f"mnist-varres: {train.size} train, {val.size} validation, {test.size} test images; "
                  f"buckets {test.resolutions} px; N={n}, {blocks} ({parameters:,} parameters)")
    if config.augment.enabled:
        reporter.line(f"augmentations: {', '.join(t['name'] for t in config.augment.transforms)}")
        # on the largest canvases, where shifts and rotations show best
        preview(build_pipeline(config.augment.transforms), train.images[-1], config.augment, config.seeds[0],
                run.plots / "augmentations.png")
    points = {f"{pooling}-seed{seed}": dataclasses.replace(config, seed=seed, seeds=[seed],
                                                          model=dataclasses.replace(config.model, pooling=[pooling]))
              for pooling in config.model.pooling for seed in config.seeds}
    train_children(run, points, train_point, here or cpu_splits, device, execution, reporter)
    splits = here or cpu_splits.to(device)
    breakdowns: dict[str, list[dict]] = {}
    histories: dict[str, list] = {}
    failed: list[str] = []
    for name, child_config in points.items():
        pooling = child_config.model.pooling[0]
        child, result = read_child(run, name, child_config, lambda: network(child_config), splits, device)
        if result is None:
            failed.append(child.path.name)
            continue
        if result.test is None:  # a sweep's run, tested only if its point is chosen
            continue
        breakdown = classification_breakdown(result.test, splits.test, test.resolutions)
        breakdowns.setdefault(pooling, []).append(breakdown | {"seconds_per_epoch": result.summary["seconds_per_epoch"]})
        histories.setdefault(pooling, []).append(result.history)
    results = {pooling: aggregate(items) for pooling, items in breakdowns.items()}
    write_plots(run, results, breakdowns, histories, test.resolutions)
    show_table(reporter, results, test.resolutions)
    headline = {"results": results, "parameters": parameters, "data": splits.record()}
    return finish_study(run, headline, failed, len(points))


def network(config: VarresPoolConfig) -> VariableInputNet:
    """One child's network: its config names a single pooling."""
    m = config.model
    return VariableInputNet(m.channels, m.pooling[0], m.conv, m.widths, m.norm)


def train_point(parent: Path, name: str, config: VarresPoolConfig, splits: Splits, device: str, reporter: Reporter) -> None:
    """One (pooling, seed) child, here or in a worker process; its test breakdown is written into it
    before it is marked completed."""
    on = torch.device(device)
    splits = splits.to(on)
    title = f"varres-pool ({config.model.pooling[0]}, seed {config.seed}): test confusion matrix"

    def add_breakdown(child, result):
        if result.test is not None:
            write_breakdown(child, classification_breakdown(result.test, splits.test, splits.test.resolutions), title)

    # Images stay black (0) outside the digit, so uncovered pixels are filled with 0.
    augment = build_pipeline(config.augment.transforms) if config.augment.enabled else None
    train_child(RunFolder(parent), "varres-pool", name, config, lambda: network(config), splits, on, reporter,
                after_training=add_breakdown, augment=augment)


def aggregate(breakdowns: list[dict]) -> dict:
    """Mean ± std over seeds of overall and per-resolution test accuracy, and epoch time."""
    def summarise(values):
        mean, std = mean_std(values)
        return {"mean": mean, "std": std}

    resolutions = breakdowns[0]["accuracy_per_resolution"]
    return {
        "runs": len(breakdowns),
        "test_accuracy": summarise([b["test_accuracy"] for b in breakdowns]),
        "accuracy_per_resolution": {r: summarise([b["accuracy_per_resolution"][r] for b in breakdowns]) for r in resolutions},
        "seconds_per_epoch": summarise([b["seconds_per_epoch"] for b in breakdowns]),
    }


def write_plots(run: RunFolder, results: dict, breakdowns: dict, histories: dict, resolutions: list[int]) -> None:
    if not results:
        return
    for key, label in (("val_accuracy", "validation accuracy"), ("train_loss", "training loss")):
        plots.mean_std_curves({f"{p} pooling": [[row[key] for row in h.rows] for h in hs] for p, hs in histories.items()},
                              label, f"{label.capitalize()} per epoch: max vs mean pooling", run.plots / f"{key}.png")
    plots.grouped_bars(
        {f"{p} pooling": {**{f"{r} px": results[p]["accuracy_per_resolution"][str(r)]["mean"] for r in resolutions},
                          "overall": results[p]["test_accuracy"]["mean"]} for p in results},
        "test accuracy", "Test accuracy per input resolution (mean over seeds)", run.plots / "accuracy_per_resolution.png",
    )
    for pooling, items in breakdowns.items():
        summed = [[sum(b["confusion_matrix"][i][j] for b in items) for j in range(10)] for i in range(10)]
        plots.confusion_matrix(summed, f"{pooling} pooling: test confusion (summed over {len(items)} seed(s))",
                               run.plots / f"confusion-{pooling}.png")


def show_table(reporter: Reporter, results: dict, resolutions: list[int]) -> None:
    if not results:  # a sweep's child, untested until its point is chosen
        return
    def fmt(value):
        return f"{value['mean']:.4f} ± {value['std']:.4f}"

    rows = [[p, r["runs"], fmt(r["test_accuracy"]), *(fmt(r["accuracy_per_resolution"][str(s)]) for s in resolutions),
             f"{r['seconds_per_epoch']['mean']:.2f}"] for p, r in results.items()]
    reporter.table("varres-pool (test accuracy, mean ± std over seeds)",
                ["pooling", "runs", "overall"] + [f"{s} px" for s in resolutions] + ["s/epoch"], rows)

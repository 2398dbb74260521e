"""`convexp sweep-batch`: the report's question 8, validation curves per batch size, over seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from convexp.config import Sweep, derive
from convexp.experiments.train_mnist import TrainMnistConfig, mnist_convnet_macs
from convexp.spec import Experiment
from convexp.stats import mean_std

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.data import Splits
    from convexp.execution import Execution
    from convexp.runs import RunFolder


@dataclass
class SweepBatchConfig(TrainMnistConfig):
    sweep: Sweep = field(default_factory=Sweep)


def child_name(batch_size: int, seed: int) -> str:
    return f"bs{batch_size}-seed{seed}"


def run(config: SweepBatchConfig, run: RunFolder, device: torch.device, reporter: Reporter,
        execution: Execution | None = None) -> dict:
    from convexp.data import load_mnist
    from convexp.execution import SEQUENTIAL
    from convexp.experiments.common import finish_study, read_child, train_children
    from convexp.models import MNISTConvNet

    execution = execution or SEQUENTIAL
    cpu_splits = load_mnist(config.data)
    here = cpu_splits.to(device) if execution.in_this_process else None  # workers: no device copy held here
    points = {child_name(b, s): derive(config, {"seed": s, "train.batch_size": b})
              for b in config.sweep.batch_sizes for s in config.sweep.seeds}
    reporter.line(f"sweep: {len(points)} runs (batch sizes {config.sweep.batch_sizes} x seeds {config.sweep.seeds})")
    train_children(run, points, train_point, here or cpu_splits, device, execution, reporter,
                   work=lambda c: c.train.epochs / c.train.batch_size ** 0.5)  # small batches: more steps, longer
    splits = here or cpu_splits.to(device)
    rows, curves = [], {}
    for name, child_config in points.items():
        child, result = read_child(run, name, child_config, lambda: MNISTConvNet(config.model.conv), splits, device)
        batch_size = child_config.train.batch_size
        rows.append(child_row(batch_size, child_config.seed, child, result))
        if result is not None:
            curves.setdefault(batch_size, []).append(result.history)
    run.write_csv("summary.csv", rows)
    aggregate = aggregate_by_batch_size(rows)
    write_plots(run, curves)
    show_table(reporter, aggregate)
    headline = {"results": aggregate, "children": [r["run"] for r in rows], "data": splits.record()}
    return finish_study(run, headline, [r["run"] for r in rows if r["status"] != "completed"], len(rows))


def train_point(parent: Path, name: str, config: SweepBatchConfig, splits: Splits, device: str, reporter: Reporter) -> None:
    """One (batch size, seed) child, here or in a worker process."""
    import torch

    from convexp.experiments.common import train_child
    from convexp.models import MNISTConvNet
    from convexp.runs import RunFolder

    on = torch.device(device)
    train_child(RunFolder(parent), "sweep-batch", name, config, lambda: MNISTConvNet(config.model.conv),
                splits.to(on), on, reporter)


def child_row(batch_size: int, seed: int, child: RunFolder, result) -> dict:
    row = {"batch_size": batch_size, "seed": seed, "status": "failed", "best_val_accuracy": "",
           "final_val_accuracy": "", "final_val_loss": "", "test_accuracy": "", "seconds_per_epoch": "",
           "run": child.path.name}
    if result is not None:
        last = result.history.rows[-1]
        row.update(status="completed", best_val_accuracy=result.history.best()["val_accuracy"],
                   final_val_accuracy=last["val_accuracy"], final_val_loss=last["val_loss"],
                   test_accuracy=result.test.accuracy if result.test else "", seconds_per_epoch=result.summary["seconds_per_epoch"])
    return row


def aggregate_by_batch_size(rows: list[dict]) -> dict[str, dict]:
    """Mean and std over the completed seeds of each batch size."""
    aggregate = {}
    for batch_size in dict.fromkeys(r["batch_size"] for r in rows):
        done = [r for r in rows if r["batch_size"] == batch_size and r["status"] == "completed"]
        entry = {"runs": len(done), "failed": sum(r["batch_size"] == batch_size for r in rows) - len(done)}
        for key in ("best_val_accuracy", "final_val_loss", "test_accuracy", "seconds_per_epoch"):
            if done:
                mean, std = mean_std([float(r[key]) for r in done])
                entry[key] = {"mean": mean, "std": std}
        aggregate[str(batch_size)] = entry
    return aggregate


def write_plots(run: RunFolder, curves: dict) -> None:
    from convexp import plots

    if not curves:
        return
    for key, label in (("val_loss", "validation loss"), ("val_accuracy", "validation accuracy")):
        plots.mean_std_curves(
            {f"batch {b}": [[row[key] for row in h.rows] for h in histories] for b, histories in curves.items()},
            label, f"{label.capitalize()} per epoch by batch size (mean ± std over seeds)", run.plots / f"{key}.png",
        )


def show_table(reporter: Reporter, aggregate: dict) -> None:
    def fmt(entry, key, digits=4):
        value = entry.get(key)
        return "-" if value is None else f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"

    order = sorted(aggregate.items(), key=lambda kv: -kv[1].get("best_val_accuracy", {"mean": -1})["mean"])
    rows = [[b, e["runs"], e["failed"], fmt(e, "best_val_accuracy"), fmt(e, "final_val_loss"),
             fmt(e, "test_accuracy"), fmt(e, "seconds_per_epoch", 2)] for b, e in order]
    reporter.table("sweep-batch (mean ± std over seeds)",
                ["batch", "runs", "failed", "best val acc", "final val loss", "test acc", "s/epoch"], rows)


def best_batch_size(summary: dict) -> str | None:
    """`convexp runs`: the batch size with the best mean validation accuracy."""
    results = summary.get("results") or {}
    best = max(((b, e["best_val_accuracy"]["mean"]) for b, e in results.items() if "best_val_accuracy" in e),
               key=lambda pair: pair[1], default=None)
    return f"best val acc {best[1]:.4f} (batch {best[0]})" if best else None


SPEC = Experiment(
    name="sweep-batch",
    help="Train over batch sizes x seeds (question 8): summary.csv and mean ± std curves.",
    config=SweepBatchConfig,
    run=run,
    questions=("Q8",),
    study=True,
    key_metric=best_batch_size,
    children=lambda config: len(config.sweep.batch_sizes) * len(config.sweep.seeds),
    macs_per_image=mnist_convnet_macs,
)

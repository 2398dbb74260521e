"""`convexp varres-pool`: questions 11, 14-17, a global-pooling net trained on native resolutions.

One child run per (pooling, seed); batches come from one resolution bucket at a time, buckets
interleaved in a fresh random order every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from convexp.config import (
    Augment,
    Invalid,
    RunConfig,
    Train,
    VarresData,
    VarresModel,
    derive,
    require_seeds,
)
from convexp.errors import ConvexpError
from convexp.spec import POOLING, Experiment
from convexp.stats import mean_std

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.data import Splits
    from convexp.execution import Execution
    from convexp.models import VariableInputNet
    from convexp.runs import RunFolder


@dataclass
class VarresPoolConfig(RunConfig):
    # `seed` is each child's own: the study trains one child per entry of `seeds`
    seeds: list[int] = field(default_factory=lambda: [0])
    data: VarresData = field(default_factory=VarresData)
    model: VarresModel = field(default_factory=VarresModel)
    train: Train = field(default_factory=Train)
    # Training augmentation, off by default (the report's runs had none); configs/varres-best.yaml
    # turns it on. Same transforms as `convexp augment`, drawn per image at its own resolution;
    # plots/augmentations.png previews them on 64 px canvases.
    augment: Augment = field(default_factory=lambda: Augment(enabled=False))

    def __post_init__(self):
        super().__post_init__()
        require_seeds("seeds", self.seeds)
        smallest = 2 ** (len(self.model.widths) + 1)  # every block halves the size once
        if min(self.data.resolutions) < smallest:
            raise Invalid("data.resolutions", f"{{key}} must be at least {smallest} px for the {len(self.model.widths) + 1} "
                                              f"pooled blocks of model.widths={self.model.widths}; got {self.data.resolutions}")


def child_name(pooling: str, seed: int) -> str:
    return f"{pooling}-seed{seed}"


def run(config: VarresPoolConfig, run: RunFolder, device: torch.device, reporter: Reporter,
        execution: Execution | None = None) -> dict:
    from convexp.augment import build_pipeline, preview
    from convexp.data import Splits
    from convexp.execution import SEQUENTIAL
    from convexp.experiments.classification import classification_breakdown
    from convexp.experiments.common import finish_study, read_child, train_children
    from convexp.models import count_parameters
    from convexp.varres import load_varres, say_empty_buckets

    execution = execution or SEQUENTIAL
    train, val, test = load_varres(config.data)
    cpu_splits = Splits(train, val, test, config.data.root)
    here = cpu_splits.to(device) if execution.in_this_process else None  # workers: no device copy held here
    n = config.model.channels
    parameters = count_parameters(network(config))  # pooling adds none: the same for every child
    blocks = f"blocks {[*config.model.widths, n]}, norm {config.model.norm}"
    reporter.line(f"mnist-varres: {train.size} train, {val.size} validation, {test.size} test images; "
                  f"buckets {test.resolutions} px; N={n}, {blocks} ({parameters:,} parameters)")
    say_empty_buckets(reporter, config.data.resolutions, train, val, test)
    if config.augment.enabled:
        reporter.line(f"augmentations: {', '.join(t['name'] for t in config.augment.transforms)}")
        # on the largest canvases, where shifts and rotations show best
        preview(build_pipeline(config.augment.transforms), train.images[-1], config.augment, config.seeds[0],
                run.plots / "augmentations.png")
    points = {child_name(pooling, seed): derive(config, {"seed": seed, "seeds": [seed], "model.pooling": [pooling]})
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
    from convexp.models import VariableInputNet

    m = config.model
    return VariableInputNet(m.channels, m.pooling[0], m.conv, m.widths, m.norm)


def train_point(parent: Path, name: str, config: VarresPoolConfig, splits: Splits, device: str, reporter: Reporter) -> None:
    """One (pooling, seed) child, here or in a worker process; its test breakdown is written into it
    before it is marked completed."""
    import torch

    from convexp.augment import build_pipeline
    from convexp.experiments.classification import BreakdownWriter
    from convexp.experiments.common import train_child
    from convexp.runs import RunFolder

    on = torch.device(device)
    splits = splits.to(on)
    breakdown = BreakdownWriter(splits.test, f"varres-pool ({config.model.pooling[0]}, seed {config.seed}): test confusion matrix")
    # Images stay black (0) outside the digit, so uncovered pixels are filled with 0.
    augment = build_pipeline(config.augment.transforms) if config.augment.enabled else None
    train_child(RunFolder(parent), "varres-pool", name, config, lambda: network(config), splits, on, reporter,
                callbacks=(breakdown,), augment=augment)


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
    from convexp import plots

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


def test_accuracy_per_pooling(summary: dict) -> str | None:
    """`convexp runs`: each pooling's mean test accuracy."""
    results = summary.get("results") or {}
    return ", ".join(f"{p} {e['test_accuracy']['mean']:.4f}" for p, e in results.items()) or None


def one_pooling(config: VarresPoolConfig) -> None:
    """A sweep point trains one network: a single pooling."""
    if len(config.model.pooling) != 1:
        raise ConvexpError(f"varres-pool sweeps one pooling per point; this point has {config.model.pooling}: "
                           "--set 'model.pooling=[max]', or --grid 'model.pooling=[[max], [mean]]'")


def pooling_net_macs(config: VarresPoolConfig) -> float:
    """Multiply-adds of the global-pooling net's convs on one image, averaged over the resolutions."""
    from convexp.progress import conv_net_macs

    model, resolutions = config.model, config.data.resolutions
    return sum(conv_net_macs(model.channels, r, tuple(model.widths)) for r in resolutions) / len(resolutions)


SPEC = Experiment(
    name="varres-pool",
    help="Global-pooling net on native varres resolutions, max vs mean (questions 11, 14-17).",
    config=VarresPoolConfig,
    run=run,
    questions=("Q16", "Q11", "Q14", "Q17"),
    study=True,
    sweepable=True,
    network=POOLING,
    key_metric=test_accuracy_per_pooling,
    children=lambda config: len(config.model.pooling) * len(config.seeds),
    macs_per_image=pooling_net_macs,
    check_sweep_point=one_pooling,
)

"""`convexp varres-resize`: questions 12, 13 and 17, every varres image resized to 28x28."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convexp.config import VarresData
from convexp.experiments.train_mnist import TrainMnistConfig, mnist_convnet_macs
from convexp.spec import RESIZE, Experiment

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.runs import RunFolder


@dataclass
class VarresResizeConfig(TrainMnistConfig):
    """MNISTConvNet as in train-mnist, on mnist-varres resized to 28x28."""

    data: VarresData = field(default_factory=VarresData)


def run(config: VarresResizeConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    from convexp.data import Splits
    from convexp.experiments.classification import (
        classification_breakdown,
        write_breakdown,
    )
    from convexp.models import MNISTConvNet, to_device
    from convexp.train import seed_everything, train_unit
    from convexp.varres import load_varres, resize_split, say_empty_buckets

    train, val, test = load_varres(config.data)
    reporter.line(f"mnist-varres: {train.size} train, {val.size} validation, {test.size} test images "
                  f"at {', '.join(map(str, test.resolutions))} px, resized to 28x28")
    say_empty_buckets(reporter, config.data.resolutions, train, val, test)
    # Test keeps one bucket per source resolution so accuracy can be told per resolution.
    splits = Splits(resize_split(train), resize_split(val), resize_split(test, merge=False), config.data.root).to(device)
    seed_everything(config.seed)
    model = to_device(MNISTConvNet(config.model.conv), device)
    result = train_unit(run, model, splits, config.train, seed=config.seed, device=device, reporter=reporter)
    if result.test is None:  # a sweep's run, tested only if its point is chosen
        return {}
    breakdown = classification_breakdown(result.test, splits.test, test.resolutions)
    write_breakdown(run, breakdown, "varres-resize: test confusion matrix")
    per_resolution = breakdown["accuracy_per_resolution"]
    reporter.table("varres-resize (test accuracy)",
                ["overall"] + [f"{r} px" for r in per_resolution] + ["s/epoch"],
                [[breakdown["test_accuracy"], *per_resolution.values(), f"{result.summary['seconds_per_epoch']:.2f}"]])
    return {}


SPEC = Experiment(
    name="varres-resize",
    help="mnist-varres resized to 28x28 into MNISTConvNet (questions 12, 13, 17).",
    config=VarresResizeConfig,
    run=run,
    questions=("Q12", "Q13", "Q17"),
    sweepable=True,
    network=RESIZE,
    macs_per_image=mnist_convnet_macs,
)

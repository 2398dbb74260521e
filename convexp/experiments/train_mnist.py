"""`convexp train-mnist`: the report's question 7, MNISTConvNet on MNIST."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convexp.config import MnistData, Model, RunConfig, Train
from convexp.spec import Experiment

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.runs import RunFolder


@dataclass
class TrainMnistConfig(RunConfig):
    """MNISTConvNet trained on 28x28 digits: what configs/train-mnist.yaml holds (and, with other
    data or sections, the configs of the experiments built on it)."""

    data: MnistData = field(default_factory=MnistData)
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)


def run(config: TrainMnistConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    from convexp.data import load_mnist
    from convexp.models import MNISTConvNet, to_device
    from convexp.train import seed_everything, test_cell, train_unit

    splits = load_mnist(config.data).to(device)
    reporter.line(f"MNIST: {splits.train.size} train, {splits.val.size} validation, {splits.test.size} test digits")
    seed_everything(config.seed)
    model = to_device(MNISTConvNet(config.model.conv), device)
    result = train_unit(run, model, splits, config.train, seed=config.seed, device=device, reporter=reporter)
    last = result.history.rows[-1]
    reporter.table(
        "train-mnist",
        ["val accuracy", "test accuracy", "s/epoch", "conv", "run folder"],
        [[last["val_accuracy"], test_cell(result), f"{result.summary['seconds_per_epoch']:.2f}", config.model.conv, str(run.path)]],
    )
    return {}


def mnist_convnet_macs(config) -> float:
    """Multiply-adds of MNISTConvNet's convs on one 28x28 digit."""
    from convexp.progress import conv_net_macs

    return conv_net_macs(64, 28)


SPEC = Experiment(
    name="train-mnist",
    help="Train MNISTConvNet on MNIST (report question 7): curves, test accuracy, model.",
    config=TrainMnistConfig,
    run=run,
    questions=("Q7",),
    sweepable=True,
    macs_per_image=mnist_convnet_macs,
)

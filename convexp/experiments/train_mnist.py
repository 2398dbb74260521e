"""`convexp train-mnist`: the report's question 7, MNISTConvNet on MNIST."""

from __future__ import annotations

import torch

from convexp.config import TrainMnistConfig
from convexp.console import Reporter
from convexp.data import load_mnist
from convexp.models import MNISTConvNet, to_device
from convexp.runs import RunFolder
from convexp.train import seed_everything, test_cell, train_unit

Config = TrainMnistConfig  # what `convexp train-mnist` reads from configs/train-mnist.yaml


def run(config: TrainMnistConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
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

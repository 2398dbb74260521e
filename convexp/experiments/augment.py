"""`convexp augment`: the report's question 9, training with per-sample augmentations."""

from __future__ import annotations

import torch

from convexp.augment import build_pipeline, preview
from convexp.config import AugmentConfig
from convexp.console import Reporter
from convexp.data import MNIST_MEAN, MNIST_STD, load_mnist
from convexp.models import MNISTConvNet, to_device
from convexp.runs import RunFolder
from convexp.train import seed_everything, test_cell, train_unit

Config = AugmentConfig  # what `convexp augment` reads from configs/augment.yaml


def run(config: AugmentConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    background = -MNIST_MEAN / MNIST_STD if config.data.normalize else 0.0
    pipeline = build_pipeline(config.augment.transforms, background) if config.augment.enabled else None
    splits = load_mnist(config.data).to(device)
    if pipeline is not None:
        preview(pipeline, splits.train.images[0], config.augment, config.seed, run.plots / "augmentations.png",
                to_unit(config))
        reporter.line(f"augmentations: {', '.join(t['name'] for t in config.augment.transforms) or 'none listed'}")
    else:
        reporter.line("augmentations: disabled (augment.enabled=false)")
    seed_everything(config.seed)
    model = to_device(MNISTConvNet(config.model.conv), device)
    result = train_unit(run, model, splits, config.train, seed=config.seed, device=device,
                        reporter=reporter, augment=pipeline)
    last = result.history.rows[-1]
    reporter.table("augment",
                ["augmented", "train acc", "val acc", "test acc", "s/epoch"],
                [[str(pipeline is not None), last["train_accuracy"], last["val_accuracy"],
                  test_cell(result), f"{result.summary['seconds_per_epoch']:.2f}"]])
    return {"augmented": pipeline is not None}


def to_unit(config: AugmentConfig):
    """Undo data.normalize for display."""
    return (lambda images: images * MNIST_STD + MNIST_MEAN) if config.data.normalize else (lambda images: images)

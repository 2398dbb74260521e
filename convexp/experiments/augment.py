"""`convexp augment`: the report's question 9, training with per-sample augmentations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convexp.config import Augment
from convexp.experiments.train_mnist import TrainMnistConfig, mnist_convnet_macs
from convexp.spec import Experiment

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.runs import RunFolder


@dataclass
class AugmentConfig(TrainMnistConfig):
    augment: Augment = field(default_factory=Augment)


def run(config: AugmentConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    from convexp.augment import build_pipeline, preview
    from convexp.data import MNIST_MEAN, MNIST_STD, load_mnist
    from convexp.models import MNISTConvNet, to_device
    from convexp.train import seed_everything, test_cell, train_unit

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
    from convexp.data import MNIST_MEAN, MNIST_STD

    return (lambda images: images * MNIST_STD + MNIST_MEAN) if config.data.normalize else (lambda images: images)


SPEC = Experiment(
    name="augment",
    help="Train with per-sample augmentations (question 9): train/val/test curves, preview grid.",
    config=AugmentConfig,
    run=run,
    questions=("Q9",),
    sweepable=True,
    macs_per_image=mnist_convnet_macs,
)

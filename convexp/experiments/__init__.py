"""One module per subcommand; this registry maps command names to config class and run function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from convexp import config


@dataclass(frozen=True)
class Experiment:
    config_class: type
    # run(config, run_folder, device, reporter) -> extra summary fields
    run: Callable


def _train_mnist(*args):
    from convexp.experiments import train_mnist

    return train_mnist.run(*args)


EXPERIMENTS: dict[str, Experiment] = {
    "train-mnist": Experiment(config.TrainMnistConfig, _train_mnist),
}

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


def lazy(module: str) -> Callable:
    """The experiment's run function, imported on first use (keeps `convexp --help` fast)."""

    def run(*args):
        import importlib

        return importlib.import_module(f"convexp.experiments.{module}").run(*args)

    return run


EXPERIMENTS: dict[str, Experiment] = {
    "train-mnist": Experiment(config.TrainMnistConfig, lazy("train_mnist")),
    "sweep-batch": Experiment(config.SweepBatchConfig, lazy("sweep_batch")),
    "augment": Experiment(config.AugmentConfig, lazy("augment")),
    "varres-resize": Experiment(config.VarresResizeConfig, lazy("varres_resize")),
    "varres-pool": Experiment(config.VarresPoolConfig, lazy("varres_pool")),
    "count-params": Experiment(config.CountParamsConfig, lazy("count_params")),
    "bench": Experiment(config.BenchConfig, lazy("bench")),
    "reproduce": Experiment(config.ReproduceConfig, lazy("reproduce")),
}

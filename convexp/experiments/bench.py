"""`convexp bench`: hand-written vs native convolution (per layer, training step, GFLOP/s), and
the training loop vs a bare loop. What it times lives in convexp/benchmark.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from convexp.config import (
    Invalid,
    RunConfig,
    require_items,
    require_positive,
    require_positive_items,
)
from convexp.spec import Experiment

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.runs import RunFolder


@dataclass
class BenchConfig(RunConfig):
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    convs: list[Literal["native", "unfold", "unfold-reference"]] = field(default_factory=lambda: ["native", "unfold"])
    batch_sizes: list[int] = field(default_factory=lambda: [16, 64, 256])
    threads: list[int] = field(default_factory=lambda: [1, 2])
    # fp32, and bf16: the same items with the forward pass and the loss under autocast, as
    # train.precision: bf16 trains (the backward follows the forward's dtypes)
    precisions: list[Literal["fp32", "bf16"]] = field(default_factory=lambda: ["fp32"])
    min_run_time: float = 0.5  # seconds each timing runs for (torch.utils.benchmark)
    rounds: int = 3  # native and hand-written alternate this many times; the fastest median counts
    loop_digits: int = 6400  # epoch of the training loop vs a bare loop, on random digits
    loop_batch_size: int = 16
    loop_repeats: int = 3
    # CUDA only: let cuDNN and cuBLAS round float32 products to TF32. Off by default, so native
    # and hand-written convs do the same float32 arithmetic (cuDNN would use TF32, cuBLAS not).
    tf32: bool = False
    # CUDA only: time each item as a captured CUDA graph, replayed: the GPU's own time for the
    # kernels, without the Python and launch cost that dominates small layers in eager mode.
    cuda_graphs: bool = False

    def __post_init__(self):
        super().__post_init__()
        for key in ("convs", "batch_sizes", "threads", "precisions"):
            require_items(key, getattr(self, key), "value")
        require_positive_items("batch_sizes", self.batch_sizes)
        require_positive_items("threads", self.threads)
        from convexp.execution.task import usable_cores

        cores = usable_cores()
        if max(self.threads) > cores:  # (PyTorch crashed at 100,000 threads)
            raise Invalid("threads", f"config key '{{key}}' lists {max(self.threads)} threads, more than the {cores} "
                                     f"core(s) this process may use: list counts from 1 to {cores}")
        for key in ("min_run_time", "rounds", "loop_digits", "loop_batch_size", "loop_repeats"):
            require_positive(key, getattr(self, key))
        if self.min_run_time > 60:  # each of a few dozen timings runs this long
            raise Invalid("min_run_time", f"config key '{{key}}' is {self.min_run_time} s per timing: the bench would run "
                          "for hours; use at most 60 (0.5 is plenty)")


def run(config: BenchConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    from convexp.benchmark import run as measure

    return measure(config, run, device, reporter)


def loop_ratio(summary: dict) -> str | None:
    """`convexp runs`: the training loop's time against a bare loop's."""
    return f"loop {summary['loop_ratio']:.3f}x bare" if "loop_ratio" in summary else None


SPEC = Experiment(
    name="bench",
    help="Time hand-written vs native conv (layers, training step, GFLOP/s) and the training loop.",
    config=BenchConfig,
    run=run,
    questions=("bench",),
    key_metric=loop_ratio,
)

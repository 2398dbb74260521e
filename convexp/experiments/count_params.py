"""`convexp count-params`: questions 10 and 15, parameters and output shapes layer by layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from convexp.config import (
    Invalid,
    RunConfig,
    require_channels,
    require_items,
    require_positive_items,
    require_widths,
)
from convexp.spec import Experiment, Flag

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.models import VariableInputNet
    from convexp.runs import RunFolder


@dataclass
class ConvExample:
    """One convolution whose output size is worked out by the formula (question 10)."""

    in_channels: int = 3
    out_channels: int = 16
    kernel_size: list[int] = field(default_factory=lambda: [5, 5])
    stride: int = 2
    padding: int = 1
    dilation: int = 1
    height: int = 768
    width: int = 1024

    def __post_init__(self):
        require_channels("in_channels", self.in_channels)
        require_channels("out_channels", self.out_channels)
        for key in ("stride", "dilation", "height", "width"):
            if getattr(self, key) < 1:
                raise Invalid(key, f"{{key}} must be at least 1; got {getattr(self, key)}")
        if self.padding < 0:
            raise Invalid("padding", f"{{key}} must be 0 or more; got {self.padding}")
        if len(self.kernel_size) != 2 or min(self.kernel_size) < 1:
            raise Invalid("kernel_size", f"{{key}} must be [height, width] >= 1; got {self.kernel_size}")


@dataclass
class CountParamsConfig(RunConfig):
    # `seed`: unused, nothing here is random; `device`: where the shapes are traced
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    conv: Literal["native", "unfold", "unfold-reference"] = "native"
    channels: int = 81  # N of the variable-input net
    pooling: Literal["max", "mean"] = "max"
    widths: list[int] = field(default_factory=lambda: [16, 32])  # its blocks before the last (see VarresModel)
    norm: Literal["none", "batch", "layer"] = "none"
    input_sizes: list[int] = field(default_factory=lambda: [28, 32, 48, 64])
    match: bool = False  # search N whose parameter count is closest to MNISTConvNet's
    match_max_channels: int = 512
    conv_examples: list[ConvExample] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        require_channels("channels", self.channels)
        require_items("input_sizes", self.input_sizes, "size, e.g. [28, 32]")
        require_positive_items("input_sizes", self.input_sizes)
        require_channels("match_max_channels", self.match_max_channels)
        require_widths("widths", self.widths)


def run(config: CountParamsConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    from convexp.models import MNISTConvNet, count_parameters
    from convexp.shapes import layer_table

    base = MNISTConvNet(config.conv)
    variable = variable_net(config, config.channels)
    tables = {"MNISTConvNet": {"parameters": count_parameters(base), "inputs": {"28": rows(layer_table(base, 28, 28))}},
              variable_name(config): {
                  "parameters": count_parameters(variable),
                  "inputs": {str(s): rows(layer_table(variable, s, s)) for s in config.input_sizes}}}
    for network, table in tables.items():
        for size, layer_rows in table["inputs"].items():
            reporter.table(f"{network} on {size}x{size} input: {table['parameters']:,} parameters",
                        ["layer", "output shape", "parameters"],
                        [[r["layer"], " x ".join(map(str, r["output_shape"])), f"{r['parameters']:,}"] for r in layer_rows])
    result = {"networks": tables}
    if config.conv_examples:
        result["conv_examples"] = conv_examples(config, reporter)
    if config.match:
        result["match"] = match(config, count_parameters(base), reporter)
    run.write_json("params.json", result)
    return {"parameters": {name: t["parameters"] for name, t in tables.items()},
            **({"match": result["match"][:2]} if config.match else {})}


def variable_net(config: CountParamsConfig, channels: int) -> VariableInputNet:
    from convexp.models import VariableInputNet

    return VariableInputNet(channels, config.pooling, config.conv, config.widths, config.norm)


def variable_name(config: CountParamsConfig) -> str:
    """'VariableInputNet(N=81)' for the report's blocks; other blocks are named too."""
    blocks = "" if (list(config.widths), config.norm) == ([16, 32], "none") else f", widths={list(config.widths)}, norm={config.norm}"
    return f"VariableInputNet(N={config.channels}{blocks})"


def rows(layer_rows) -> list[dict]:
    return [r.as_dict() for r in layer_rows]


def conv_examples(config: CountParamsConfig, reporter: Reporter) -> list[dict]:
    from convexp.shapes import conv_shape

    examples = []
    for i, e in enumerate(config.conv_examples):
        shape = conv_shape(e.out_channels, e.height, e.width, tuple(e.kernel_size), (e.stride, e.stride),
                           (e.padding, e.padding), f"conv_examples[{i}]", (e.dilation, e.dilation))
        examples.append({**vars(e), "output_shape": shape, "parameters": e.out_channels * (e.in_channels * e.kernel_size[0] * e.kernel_size[1] + 1)})
    reporter.table("Convolution output sizes: floor((in + 2p - d(k - 1) - 1) / s) + 1",
                ["input (c x h x w)", "kernel", "stride", "padding", "dilation", "output (c x h x w)"],
                [[f"{e['in_channels']} x {e['height']} x {e['width']}", "x".join(map(str, e["kernel_size"])), e["stride"],
                  e["padding"], e["dilation"], " x ".join(map(str, e["output_shape"]))] for e in examples])
    return examples


def match(config: CountParamsConfig, target: int, reporter: Reporter) -> list[dict]:
    from convexp.shapes import nearest_channel_counts

    nearest = nearest_channel_counts(target, range(1, config.match_max_channels + 1),
                                     lambda n: variable_net(config, n))[:2]
    reporter.table(f"N closest to MNISTConvNet's {target:,} parameters",
                ["N", "parameters", "difference"],
                [[e["channels"], f"{e['parameters']:,}", f"{e['difference']:+,}"] for e in nearest])
    return nearest


def parameter_counts(summary: dict) -> str | None:
    """`convexp runs`: each network's parameter count."""
    counts = summary.get("parameters")
    return ", ".join(f"{k}: {v:,}" for k, v in counts.items()) if counts else None


SPEC = Experiment(
    name="count-params",
    help="Parameters and output shape per layer (questions 10, 15); --match searches N.",
    config=CountParamsConfig,
    run=run,
    questions=("Q15", "Q10"),
    seed_option=False,
    device_option=False,
    flags=(Flag("--channels", "channels", "N of the variable-input net.", int),
           Flag("--match", "match", "Find the N closest to MNISTConvNet's parameter count.")),
    key_metric=parameter_counts,
)

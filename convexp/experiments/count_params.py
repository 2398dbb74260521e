"""`convexp count-params`: questions 10 and 15, parameters and output shapes layer by layer."""

from __future__ import annotations

import torch

from convexp.config import CountParamsConfig
from convexp.console import Reporter
from convexp.models import MNISTConvNet, VariableInputNet, count_parameters
from convexp.runs import RunFolder
from convexp.shapes import conv_shape, layer_table, nearest_channel_counts

Config = CountParamsConfig  # what `convexp count-params` reads from configs/count-params.yaml


def run(config: CountParamsConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
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
    return VariableInputNet(channels, config.pooling, config.conv, config.widths, config.norm)


def variable_name(config: CountParamsConfig) -> str:
    """'VariableInputNet(N=81)' for the report's blocks; other blocks are named too."""
    blocks = "" if (list(config.widths), config.norm) == ([16, 32], "none") else f", widths={list(config.widths)}, norm={config.norm}"
    return f"VariableInputNet(N={config.channels}{blocks})"


def rows(layer_rows) -> list[dict]:
    return [r.as_dict() for r in layer_rows]


def conv_examples(config: CountParamsConfig, reporter: Reporter) -> list[dict]:
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
    nearest = nearest_channel_counts(target, range(1, config.match_max_channels + 1),
                                     lambda n: variable_net(config, n))[:2]
    reporter.table(f"N closest to MNISTConvNet's {target:,} parameters",
                ["N", "parameters", "difference"],
                [[e["channels"], f"{e['parameters']:,}", f"{e['difference']:+,}"] for e in nearest])
    return nearest

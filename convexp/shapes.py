"""Layer-by-layer output shapes and parameter counts, from the report's output-size formula.

    out = floor((in + 2·padding - dilation·(kernel - 1) - 1) / stride) + 1
        = floor((in + 2·padding - kernel) / stride) + 1      without dilation (question 2 / question 10)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch.nn as nn

from convexp.autograd import conv_output_size
from convexp.errors import ConvexpError
from convexp.models import VariableInputNet, count_parameters


@dataclass
class LayerRow:
    layer: str
    output_shape: list[int]  # (channels, height, width) or (features,)
    parameters: int

    def as_dict(self) -> dict:
        return asdict(self)


def conv_shape(channels_out: int, height: int, width: int, kernel, stride, padding, name: str, dilation=(1, 1)) -> list[int]:
    h = conv_output_size(height, kernel[0], stride[0], padding[0], dilation[0])
    w = conv_output_size(width, kernel[1], stride[1], padding[1], dilation[1])
    if h < 1 or w < 1:
        span = "" if tuple(dilation) == (1, 1) else f" (spanning {dilation[0] * (kernel[0] - 1) + 1}x{dilation[1] * (kernel[1] - 1) + 1} with dilation {tuple(dilation)})"
        raise ConvexpError(
            f"{name}: kernel {kernel[0]}x{kernel[1]}{span} is larger than its padded input "
            f"{height + 2 * padding[0]}x{width + 2 * padding[1]}: use a larger input size or more padding"
        )
    return [channels_out, h, w]


def layer_table(model: nn.Module, height: int, width: int) -> list[LayerRow]:
    """Rows for MNISTConvNet or VariableInputNet on a (1, height, width) input."""
    rows = [LayerRow("input", [1, height, width], 0)]
    shape = rows[0].output_shape
    for index in range(1, model.features.depth + 1):
        conv = getattr(model.features, f"conv{index}")
        norm = getattr(model.features, f"norm{index}", None)
        kernel, stride, padding = (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding))
        shape = conv_shape(conv.out_channels, shape[1], shape[2], kernel, stride, padding, f"conv{index}", tuple(conv.dilation))
        parameters = count_parameters(conv) + (count_parameters(norm) if norm is not None else 0)
        rows.append(LayerRow(f"conv{index} {kernel[0]}x{kernel[1]}{f' + {type(norm).__name__}' if norm is not None else ''} + ReLU",
                             shape, parameters))
        shape = conv_shape(shape[0], shape[1], shape[2], (2, 2), (2, 2), (0, 0), f"pool{index}")
        rows.append(LayerRow(f"pool{index} 2x2", shape, 0))
    if isinstance(model, VariableInputNet):
        shape = [shape[0]]
        rows.append(LayerRow(f"global {model.pooling} pool", shape, 0))
    else:
        shape = [shape[0] * shape[1] * shape[2]]
        rows.append(LayerRow("flatten", shape, 0))
        if shape[0] != model.fc1.in_features:
            raise ConvexpError(
                f"MNISTConvNet needs 28x28 input: {height}x{width} flattens to {shape[0]} features, "
                f"fc1 takes {model.fc1.in_features}; use the variable-input net for other sizes"
            )
    rows.append(LayerRow("fc1 (linear)", [model.fc1.out_features], count_parameters(model.fc1)))
    return rows


def nearest_channel_counts(target: int, search: range,
                           network: Callable[[int], nn.Module] = VariableInputNet) -> list[dict]:
    """N values of `network(N)` near the target count, ordered by |parameters(N) - target|.

    The count is affine in N (the last conv and fc1 grow by a fixed amount a channel: 299 for
    the report's blocks), so two real nets give the line, the line gives the candidates, and each
    candidate is counted on a real net again: instant for any search range, no count on trust.
    """
    base = count_parameters(network(1))
    per_channel = count_parameters(network(2)) - base
    guess = 1 + (target - base) // per_channel
    candidates = sorted({min(max(n, search.start), search.stop - 1) for n in range(guess - 2, guess + 4)})
    counts = [{"channels": n, "parameters": count_parameters(network(n))} for n in candidates]
    for entry in counts:
        entry["difference"] = entry["parameters"] - target
    return sorted(counts, key=lambda e: (abs(e["difference"]), e["channels"]))

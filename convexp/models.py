"""The networks: the hand-written conv layer, MNISTConvNet (question 7), VariableInputNet (question 11).

`conv: native | unfold | unfold-reference` picks nn.Conv2d or UnfoldConv2d (fast row layout, or
the report's F.unfold/F.fold layout) everywhere; both initialise their
parameters with the same random draws, so one seed gives the same network either way.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from convexp import autograd


class UnfoldConv2d(nn.Module):
    """Conv layer built on the hand-written conv Functions: nn.Conv2d's arguments and initialisation.

    stride, padding (int, pair, "same" or "valid"), dilation, groups and bias as in nn.Conv2d;
    only zero padding (nn.Conv2d's default padding_mode).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode: str = "zeros", algorithm: str = "rows"):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"UnfoldConv2d pads with zeros only; got padding_mode={padding_mode!r}")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels ({in_channels}) and out_channels ({out_channels})")
        self.algorithm = algorithm  # "rows" (fast) or "reference" (the report's F.unfold/F.fold)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = autograd.as_pair(kernel_size)
        self.stride = autograd.as_pair(stride)
        self.padding = padding if isinstance(padding, str) else autograd.as_pair(padding)
        self.dilation = autograd.as_pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same calls, in the same order, as nn.Conv2d.reset_parameters: same seed, same weights.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]  # (c_in / groups)·kh·kw
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def geometry(self, x: torch.Tensor) -> autograd.ConvGeometry:
        return autograd.conv_geometry(x, self.weight, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c_in, h, w) -> (b, c_out, h_out, w_out)."""
        return autograd.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                               algorithm=self.algorithm)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
            f"algorithm={self.algorithm}"
        )


CONV_KINDS = ("native", "unfold", "unfold-reference")


def make_conv(kind: str, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1,
              bias: bool = True) -> nn.Module:
    if kind == "native":
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
    if kind == "unfold":
        return UnfoldConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
    if kind == "unfold-reference":
        return UnfoldConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias,
                            algorithm="reference")
    raise ValueError(f"conv kind must be one of {CONV_KINDS}; got {kind!r}")


NORMS = ("none", "batch", "layer")


class ConvBlocks(nn.Module):
    """3x3 conv (padding 1) [+ norm] + ReLU + 2x2 max-pool blocks: 1 -> widths... -> last_channels.

    The report's blocks are 1 -> 16 -> 32 -> last_channels with no norm; attribute names stay
    conv1, conv2, ... (and norm1, ...) so its checkpoints load.
    """

    def __init__(self, conv: str, last_channels: int = 64, widths: tuple[int, ...] = (16, 32), norm: str = "none"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
        channels = [1, *widths, last_channels]
        self.depth = len(channels) - 1
        for i in range(1, len(channels)):
            # With BatchNorm the conv's bias is redundant (the norm's shift does its work); with the
            # per-image layer norm it is not quite, but is dropped too, so both norms cost the same.
            setattr(self, f"conv{i}", make_conv(conv, channels[i - 1], channels[i], bias=norm == "none"))
            if norm == "batch":
                setattr(self, f"norm{i}", nn.BatchNorm2d(channels[i]))
            elif norm == "layer":  # per image, over channels and space: no batch statistics to carry to eval
                setattr(self, f"norm{i}", nn.GroupNorm(1, channels[i]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 1, h, w) -> (b, last_channels, h // 2^depth, w // 2^depth)."""
        for i in range(1, self.depth + 1):
            x = getattr(self, f"conv{i}")(x)
            norm = getattr(self, f"norm{i}", None)
            if norm is not None:
                x = norm(x)
            # The report's ReLU then max-pool, computed as max-pool then ReLU: ReLU is monotone, so
            # both give the same values and the same gradients, bit for bit, and the ReLU touches
            # a quarter of the elements (evaluation 1.3x faster, a training step 1.1x on a CPU).
            x = F.relu(F.max_pool2d(x, 2))
        return x


class MNISTConvNet(nn.Module):
    """The report's question-7 network: 28x28 digits -> 10 logits, 29,066 parameters."""

    def __init__(self, conv: str = "native"):
        super().__init__()
        self.features = ConvBlocks(conv, last_channels=64)
        self.fc1 = nn.Linear(64 * 3 * 3, 10)  # 28 -> 14 -> 7 -> 3 after three 2x2 pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 1, 28, 28) -> (b, 10)."""
        return self.fc1(self.features(x).flatten(1))


class VariableInputNet(nn.Module):
    """Conv blocks with N channels at the end, global max/mean pooling, linear N -> 10.

    Any input of at least 2^blocks px works: the global pool removes the spatial size (question 11).
    Parameters with the report's blocks (widths 16, 32, no norm): 4,810 + 299·N (23,946 at N=64,
    29,029 at N=81).
    """

    def __init__(self, channels: int = 81, pooling: str = "max", conv: str = "native",
                 widths: tuple[int, ...] = (16, 32), norm: str = "none"):
        super().__init__()
        if pooling not in ("max", "mean"):
            raise ValueError(f"pooling must be 'max' or 'mean'; got {pooling!r}")
        self.pooling = pooling
        self.features = ConvBlocks(conv, last_channels=channels, widths=tuple(widths), norm=norm)
        self.fc1 = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 1, h, w) -> (b, 10) for any h, w >= 2^blocks."""
        x = self.features(x)  # (b, N, h', w')
        x = x.amax(dim=(2, 3)) if self.pooling == "max" else x.mean(dim=(2, 3))  # (b, N)
        return self.fc1(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to `device` in channels-last memory, the layout every experiment trains in.

    On this kind of CPU, oneDNN's convolutions and max-pooling run 1.3-1.8x faster on
    channels-last maps than on NCHW ones (see `convexp bench`); the hand-written conv reads
    its patches from channels-last memory too.
    """
    return model.to(device=device, memory_format=torch.channels_last)

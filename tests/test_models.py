"""Network shapes, exact parameter counts, and native vs hand-written conv equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convexp.models import (
    MNISTConvNet,
    UnfoldConv2d,
    VariableInputNet,
    count_parameters,
)


@pytest.mark.parametrize("conv", ["native", "unfold", "unfold-reference"])
def test_mnist_convnet_shape_and_29066_parameters(conv):
    model = MNISTConvNet(conv)
    assert count_parameters(model) == 29_066
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_unfold_switch_really_uses_the_hand_written_layer():
    assert isinstance(MNISTConvNet("unfold").features.conv1, UnfoldConv2d)
    assert isinstance(MNISTConvNet("native").features.conv1, torch.nn.Conv2d)
    with pytest.raises(ValueError, match="conv kind"):
        MNISTConvNet("fancy")


@pytest.mark.parametrize("channels,expected", [(64, 23_946), (81, 29_029), (82, 29_328)])
def test_variable_input_net_parameter_counts_match_the_report(channels, expected):
    assert count_parameters(VariableInputNet(channels)) == expected


@pytest.mark.parametrize("pooling", ["max", "mean"])
@pytest.mark.parametrize("size", [28, 32, 48, 64])
def test_variable_input_net_accepts_any_resolution(pooling, size):
    assert VariableInputNet(16, pooling)(torch.zeros(2, 1, size, size)).shape == (2, 10)


def test_same_seed_gives_same_training_curve_native_and_unfold():
    """A few Adam steps from one seed: both convs follow the same losses within float tolerance."""
    data = torch.Generator().manual_seed(1)
    images = torch.rand(6, 16, 1, 28, 28, generator=data)
    labels = torch.randint(0, 10, (6, 16), generator=data)
    curves = {}
    for conv in ("native", "unfold", "unfold-reference"):
        torch.manual_seed(0)
        model = MNISTConvNet(conv)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for x, y in zip(images, labels):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        curves[conv] = torch.tensor(losses)
    torch.testing.assert_close(curves["unfold"], curves["native"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(curves["unfold-reference"], curves["native"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(curves["native"][0], curves["native"][-1])  # it did learn something


@pytest.mark.parametrize("norm,expected", [("none", 28_709), ("batch", 28_838), ("layer", 28_838)])
def test_blocks_and_norms_count_what_they_add(norm, expected):
    """A fourth block (widths 16, 32, 32, N = 49); a norm adds 2 parameters a channel and takes
    the conv's bias."""
    channels = [1, 16, 32, 32, 49]
    convs = sum(9 * a * b for a, b in zip(channels, channels[1:]))
    per_channel = sum(channels[1:])  # a bias, or a norm's two minus the dropped bias: one each
    assert expected == convs + per_channel * (1 if norm == "none" else 2) + 49 * 10 + 10
    net = VariableInputNet(49, "max", "native", widths=(16, 32, 32), norm=norm)
    assert count_parameters(net) == expected
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 10)  # 32 px halves four times: 2x2
    assert (net.features.conv1.bias is None) == (norm != "none")


def test_the_report_blocks_are_unchanged():
    """Default blocks: the report's network, with its checkpoint names."""
    assert count_parameters(VariableInputNet(81)) == 29_029
    assert set(VariableInputNet(81).state_dict()) == {f"features.conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")} | {"fc1.weight", "fc1.bias"}


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_pooling_before_the_relu_gives_the_reports_order_bit_for_bit(norm):
    """ConvBlocks pools, then applies ReLU: the values and every gradient must be exactly those of
    the report's ReLU-then-pool, windows that are all negative (all 0 after ReLU) included."""
    from convexp.models import ConvBlocks

    torch.manual_seed(0)
    blocks = ConvBlocks("native", last_channels=8, widths=(4,), norm=norm)
    x = torch.randn(3, 1, 12, 12, requires_grad=True)

    def report_order(x):
        for i in (1, 2):
            x = getattr(blocks, f"conv{i}")(x)
            if norm != "none":
                x = getattr(blocks, f"norm{i}")(x)
            x = F.max_pool2d(F.relu(x), 2)
        return x

    grad = torch.randn(3, 8, 3, 3)
    ours, theirs = blocks(x), report_order(x)
    assert torch.equal(ours, theirs) and (theirs == 0).any()  # some windows were all negative
    mine = torch.autograd.grad(ours, [x, *blocks.parameters()], grad)
    expected = torch.autograd.grad(theirs, [x, *blocks.parameters()], grad)
    assert all(torch.equal(a, b) for a, b in zip(mine, expected))

"""Hand-written backward passes against PyTorch: gradcheck in float64, equality in float32."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import gradcheck

from convexp import autograd
from convexp.models import UnfoldConv2d
from tests.helpers import ALGORITHMS, GEOMETRY_GRID, WIDE_GRID, float64


def test_divide_gradcheck_and_formula():
    x, y = float64(3, 4), float64(3, 4, positive=True)
    assert gradcheck(autograd.Divide.apply, (x, y))
    grad_s = torch.randn(3, 4, dtype=torch.float64)
    autograd.Divide.apply(x, y).backward(grad_s)
    assert torch.allclose(x.grad, grad_s / y)
    assert torch.allclose(y.grad, -grad_s * x / y**2)


def test_sigmoid_matches_torch():
    x = float64(5, 3)
    assert gradcheck(autograd.Sigmoid.apply, (x,))
    assert torch.allclose(autograd.Sigmoid.apply(x), torch.sigmoid(x))


def test_matmul_transposed_gradcheck_and_shapes():
    w, x = float64(4, 6), float64(5, 6)
    assert gradcheck(autograd.MatmulTransposed.apply, (w, x))
    y = autograd.MatmulTransposed.apply(w, x)
    assert y.shape == (4, 5)
    grad_y = torch.randn(4, 5, dtype=torch.float64)
    y.backward(grad_y)
    assert torch.allclose(w.grad, grad_y @ x)  # W∇ = Y∇ X (report, question 3)


def test_expand_gradcheck_sums_rows():
    x = float64(7)
    assert gradcheck(lambda t: autograd.Expand.apply(t, 16), (x,))
    y = autograd.Expand.apply(x, 16)
    assert y.shape == (7, 16)
    grad_y = torch.randn(7, 16, dtype=torch.float64)
    y.backward(grad_y)
    assert torch.allclose(x.grad, grad_y @ torch.ones(16, dtype=torch.float64))




@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stride,padding,kernel", GEOMETRY_GRID)
def test_conv2d_gradcheck_grid(stride, padding, kernel, algorithm):
    x, w, b = float64(2, 2, 7, 8), float64(3, 2, *kernel), float64(3)
    assert gradcheck(lambda x, w, b: autograd.conv2d(x, w, b, stride, padding, algorithm=algorithm), (x, w, b),
                     fast_mode=True)
    expected = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert torch.allclose(autograd.conv2d(x, w, b, stride, padding, algorithm=algorithm), expected)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stride,padding,kernel,c_in,c_out,batch", WIDE_GRID)
def test_conv2d_wide_grid_equals_f_conv2d_in_float32(stride, padding, kernel, c_in, c_out, batch, algorithm):
    x = torch.randn(batch, c_in, 9, 10, requires_grad=True)
    w, b = torch.randn(c_out, c_in, *kernel, requires_grad=True), torch.randn(c_out, requires_grad=True)
    ours = autograd.conv2d(x, w, b, stride, padding, algorithm=algorithm)
    expected = F.conv2d(x, w, b, stride=stride, padding=padding)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(expected)
    for mine, theirs in zip(torch.autograd.grad(ours, (x, w, b), grad), torch.autograd.grad(expected, (x, w, b), grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv2d_without_bias_and_unbatched_input(algorithm):
    x, w = float64(3, 6, 6), float64(2, 3, 3, 3)
    assert gradcheck(lambda x, w: autograd.conv2d(x, w, None, 1, 1, algorithm=algorithm), (x, w), fast_mode=True)
    assert autograd.conv2d(x, w, padding=1, algorithm=algorithm).shape == (2, 6, 6)


def test_rows_conv_accepts_channels_last_and_strided_inputs():
    x = float64(2, 3, 9, 9)
    w = float64(4, 3, 3, 3)
    channels_last = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    assert gradcheck(lambda x, w: autograd.conv2d(x, w, None, 2, 1), (channels_last, w), fast_mode=True)
    sliced = float64(2, 3, 12, 12)[:, :, ::2, 1:10]  # a non-contiguous view
    torch.testing.assert_close(autograd.conv2d(sliced, w, None, 1, 1), F.conv2d(sliced, w, None, 1, 1))


@pytest.fixture
def small_row_budget(monkeypatch):
    """Budgets so small that R is never kept: every conv runs through the chunked path."""
    monkeypatch.setattr(autograd, "KEEP_ROWS_BYTES", 0)
    monkeypatch.setattr(autograd, "CHUNK_ROWS_BYTES", 1)  # one image per chunk


@pytest.mark.parametrize("c_in,batch,stride,padding", [(1, 3, 1, 1), (3, 4, 2, 1), (2, 5, 1, 0)])
def test_chunked_rows_conv_gradcheck(small_row_budget, c_in, batch, stride, padding):
    x, w, b = float64(batch, c_in, 7, 6), float64(4, c_in, 3, 3), float64(4)
    assert gradcheck(lambda x, w, b: autograd.conv2d(x, w, b, stride, padding), (x, w, b), fast_mode=True)
    torch.testing.assert_close(autograd.conv2d(x, w, b, stride, padding), F.conv2d(x, w, b, stride, padding))


def test_rows_conv_of_an_empty_batch():
    x, w, b = torch.randn(0, 3, 5, 5, requires_grad=True), torch.randn(4, 3, 3, 3, requires_grad=True), torch.randn(4)
    y = autograd.conv2d(x, w, b, 1, 1)
    assert y.shape == (0, 4, 5, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


def test_chunks_follow_the_row_budget(monkeypatch):
    monkeypatch.setattr(autograd, "KEEP_ROWS_BYTES", 1000)
    monkeypatch.setattr(autograd, "CHUNK_ROWS_BYTES", 300)
    assert autograd.images_per_chunk(10, 100) == 10  # R of 1,000 bytes: kept whole
    assert autograd.images_per_chunk(11, 100) == 3  # too big: chunks of 300 bytes
    assert autograd.images_per_chunk(11, 500) == 1  # an image bigger than a chunk still goes alone
    assert autograd.chunk_bounds(11, 3) == [(0, 3), (3, 6), (6, 9), (9, 11)]


def test_chunked_float32_layer_matches_kept_rows(monkeypatch):
    # The chunked path must give the kept path's results: same sums, only split by image.
    torch.manual_seed(0)
    layer = UnfoldConv2d(16, 32, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(6, 16, 14, 14).to(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(6, 32, 14, 14)
    results = []
    for keep, chunk in ((1 << 30, 1 << 30), (0, 2 * 14 * 14 * 144 * 4)):  # kept; 3 chunks of 2 images
        monkeypatch.setattr(autograd, "KEEP_ROWS_BYTES", keep)
        monkeypatch.setattr(autograd, "CHUNK_ROWS_BYTES", chunk)
        layer.zero_grad()
        x.grad = None
        y = layer(x)
        y.backward(grad)
        results.append((y.detach(), x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    for kept, chunked in zip(*results):
        torch.testing.assert_close(chunked, kept, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv2d_first_layer_skips_input_grad(algorithm):
    x = torch.randn(2, 1, 8, 8)  # no requires_grad: like a network's input
    w = torch.randn(3, 1, 3, 3, requires_grad=True)
    autograd.conv2d(x, w, None, 1, 1, algorithm=algorithm).sum().backward()
    assert x.grad is None and w.grad is not None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stride,padding,kernel", [(1, 1, (3, 3)), (2, 0, (5, 5)), (2, 2, (3, 5)), (1, 0, (1, 1))])
def test_unfold_layer_equals_nn_conv2d_in_float32(stride, padding, kernel, algorithm):
    torch.manual_seed(0)
    native = nn.Conv2d(4, 6, kernel, stride=stride, padding=padding)
    ours = UnfoldConv2d(4, 6, kernel, stride=stride, padding=padding, algorithm=algorithm)
    ours.load_state_dict(native.state_dict())
    x1 = torch.randn(3, 4, 12, 11, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = native(x1), ours(x2)
    torch.testing.assert_close(y2, y1, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, native.weight.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, native.bias.grad, rtol=1e-5, atol=1e-4)


def test_unfold_layer_initialises_like_nn_conv2d():
    torch.manual_seed(3)
    native = nn.Conv2d(2, 5, 3)
    torch.manual_seed(3)
    ours = UnfoldConv2d(2, 5, 3)
    assert isinstance(ours.weight, nn.Parameter) and isinstance(ours.bias, nn.Parameter)
    assert torch.equal(ours.weight, native.weight) and torch.equal(ours.bias, native.bias)


@pytest.mark.parametrize(
    "x_shape,w_shape,stride,padding,message",
    [
        ((1, 1, 4, 4), (1, 1, 7, 7), 1, 1, "larger than the padded input"),
        ((1, 2, 8, 8), (1, 3, 3, 3), 1, 1, "input channels"),
        ((1, 1, 8, 8), (1, 1, 3, 3), 0, 1, "stride must be at least 1"),
        ((8, 8), (1, 1, 3, 3), 1, 1, "must be (b, c, h, w)"),
    ],
)
def test_conv2d_rejects_impossible_shapes(x_shape, w_shape, stride, padding, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        autograd.conv2d(torch.zeros(x_shape), torch.zeros(w_shape), None, stride, padding)


def test_output_size_formula_matches_torch():
    for size, kernel, stride, padding in itertools.product((7, 28, 33), (1, 3, 5), (1, 2, 3), (0, 1, 2)):
        out = F.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding)
        assert out.shape[-1] == autograd.conv_output_size(size, kernel, stride, padding)

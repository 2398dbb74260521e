"""The hand-written conv as a drop-in for F.conv2d: PyTorch's own sample inputs, gradcheck, bad arguments.

PyTorch describes F.conv2d by the sample inputs of its OpInfo entry `nn.functional.conv2d`
(torch.testing._internal.common_methods_invocations, which needs the test packages expecttest
and hypothesis). Every sample runs through both hand-written layouts: forward and every
gradient must equal F.conv2d's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import gradcheck

from convexp import autograd
from convexp.models import UnfoldConv2d
from tests.helpers import (
    ALGORITHMS,
    GRADCHECK_CASES,
    TOLERANCE,
    conv2d_opinfo,
    float64,
    run_sample,
)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_opinfo_sample_of_f_conv2d(algorithm, dtype):
    samples = list(conv2d_opinfo().sample_inputs("cpu", dtype, requires_grad=True))
    assert len(samples) >= 30  # stride, padding, dilation, groups, 'same' and 'valid', unbatched
    failures = []
    for n, sample in enumerate(samples):
        try:
            run_sample(sample, algorithm, TOLERANCE[dtype])
        except (AssertionError, ValueError, RuntimeError) as exc:
            failures.append(f"sample {n}: input {tuple(sample.input.shape)}, weight {tuple(sample.args[0].shape)}, "
                            f"{sample.kwargs}: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_dilated_grouped_same(case, algorithm):
    x_shape, w_shape, options = GRADCHECK_CASES[case]
    x, w, b = float64(*x_shape), float64(*w_shape), float64(w_shape[0])
    assert gradcheck(lambda x, w, b: autograd.conv2d(x, w, b, algorithm=algorithm, **options), (x, w, b), fast_mode=True)
    torch.testing.assert_close(autograd.conv2d(x, w, b, algorithm=algorithm, **options), F.conv2d(x, w, b, **options))


def test_chunked_rows_path_with_groups_and_dilation(monkeypatch):
    monkeypatch.setattr(autograd, "KEEP_ROWS_BYTES", 0)
    monkeypatch.setattr(autograd, "CHUNK_ROWS_BYTES", 1)  # one image per chunk, unfolded again in backward
    x, w, b = float64(3, 4, 7, 6), float64(4, 2, 3, 3), float64(4)
    options = {"groups": 2, "dilation": 2, "padding": "same"}
    assert gradcheck(lambda x, w, b: autograd.conv2d(x, w, b, **options), (x, w, b), fast_mode=True)


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gpu_layout_of_the_rows_path_on_the_cpu(case, monkeypatch):
    """What a GPU runs (one unfold copy for every channel count, the input's gradient folded by
    one matmul and col2im), checked here on the CPU, where CI can see it break."""
    monkeypatch.setattr(autograd, "LAUNCH_BOUND_DEVICES", ("cpu", "cuda"))
    x_shape, w_shape, options = GRADCHECK_CASES[case]
    x, w, b = float64(*x_shape), float64(*w_shape), float64(w_shape[0])
    assert gradcheck(lambda x, w, b: autograd.conv2d(x, w, b, **options), (x, w, b), fast_mode=True)
    depthwise = float64(2, 3, 6, 5), float64(3, 1, 3, 3), float64(3)  # one channel per group: the kh·kw-copy case on CPU
    assert gradcheck(lambda x, w, b: autograd.conv2d(x, w, b, groups=3, padding=1), depthwise, fast_mode=True)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_unfold_layer_takes_nn_conv2d_arguments_and_initialises_like_it(algorithm):
    options = {"stride": 1, "padding": "same", "dilation": 2, "groups": 2}
    torch.manual_seed(5)
    native = nn.Conv2d(4, 6, (2, 3), **options)
    torch.manual_seed(5)
    ours = UnfoldConv2d(4, 6, (2, 3), algorithm=algorithm, **options)
    assert ours.weight.shape == native.weight.shape == (6, 2, 2, 3)
    assert torch.equal(ours.weight, native.weight) and torch.equal(ours.bias, native.bias)
    x = torch.randn(2, 4, 9, 8)
    torch.testing.assert_close(ours(x), native(x), rtol=1e-5, atol=1e-5)


def test_output_size_formula_with_dilation_matches_torch():
    for size, kernel, stride, padding, dilation in [(28, 3, 1, 1, 2), (33, 5, 2, 0, 3), (9, 2, 3, 2, 4), (7, 3, 1, 0, 3)]:
        out = F.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding,
                       dilation=dilation)
        assert out.shape[-1] == autograd.conv_output_size(size, kernel, stride, padding, dilation)


@pytest.mark.parametrize(
    "x_shape,w_shape,options,message",
    [
        ((1, 4, 8, 8), (6, 2, 3, 3), {"groups": 3}, "groups=3 must divide both the input channels (4)"),
        ((1, 4, 8, 8), (5, 2, 3, 3), {"groups": 2}, "the output channels (5)"),
        ((1, 4, 8, 8), (4, 4, 3, 3), {"groups": 2}, "conv weight expects 8 input channels"),
        ((1, 1, 8, 8), (1, 1, 3, 3), {"dilation": 0}, "dilation must be at least 1"),
        ((1, 1, 8, 8), (1, 1, 3, 3), {"padding": "full"}, "padding 'full' is not one of 'same', 'valid'"),
        ((1, 1, 8, 8), (1, 1, 3, 3), {"padding": "same", "stride": 2}, "padding='same' needs stride 1"),
        ((1, 1, 8, 8), (1, 1, 3, 3), {"dilation": 4}, "spanning 9x9 with dilation (4, 4)) is larger than the padded input 8x8"),
        ((1, 1, 8, 8), (1, 1, 3, 3), {"groups": 0}, "groups must be a whole number of at least 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(x_shape, w_shape, options, message):
    with pytest.raises(ValueError) as raised:
        autograd.conv2d(torch.zeros(x_shape), torch.zeros(w_shape), **options)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_unfold_layer_rejects_groups_that_do_not_divide():
    with pytest.raises(ValueError, match="groups=3 must divide in_channels"):
        UnfoldConv2d(4, 6, 3, groups=3)

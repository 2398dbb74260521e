"""count-params: the shape table against real forward passes, the formula, and N matching."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from convexp.errors import ConvexpError
from convexp.models import MNISTConvNet, VariableInputNet
from convexp.shapes import conv_shape, layer_table, nearest_channel_counts
from tests.helpers import invoke


def traced_shapes(model, size):
    """Output shapes of each conv and pool, and the logits, from a real forward pass."""
    shapes = []
    x = torch.zeros(1, 1, size, size)
    for conv in (model.features.conv1, model.features.conv2, model.features.conv3):
        x = F.relu(conv(x))
        shapes.append(list(x.shape[1:]))
        x = F.max_pool2d(x, 2)
        shapes.append(list(x.shape[1:]))
    shapes.append(list(model(torch.zeros(1, 1, size, size)).shape[1:]))
    return shapes


@pytest.mark.parametrize("size", [8, 28, 31, 32, 48, 64, 100])
def test_variable_net_table_matches_a_forward_pass(size):
    model = VariableInputNet(20)
    rows = layer_table(model, size, size)
    table = [r.output_shape for r in rows if r.layer.startswith(("conv", "pool"))] + [rows[-1].output_shape]
    assert table == traced_shapes(model, size)
    assert sum(r.parameters for r in rows) == 4810 + 299 * 20


def test_mnist_table_and_its_input_size_check():
    rows = layer_table(MNISTConvNet(), 28, 28)
    assert [r.output_shape for r in rows if r.layer == "flatten"] == [[576]]
    assert sum(r.parameters for r in rows) == 29_066
    with pytest.raises(ConvexpError, match="MNISTConvNet needs 28x28 input"):
        layer_table(MNISTConvNet(), 32, 32)


@pytest.mark.parametrize("height,width,kernel,stride,padding", [
    (768, 1024, (5, 5), 2, 1), (28, 28, (3, 3), 1, 1), (33, 17, (3, 5), 3, 2), (9, 9, (9, 9), 1, 0), (10, 7, (4, 2), 2, 0),
])
def test_formula_matches_conv2d(height, width, kernel, stride, padding):
    out = F.conv2d(torch.zeros(1, 1, height, width), torch.zeros(4, 1, *kernel), stride=stride, padding=padding)
    assert conv_shape(4, height, width, kernel, (stride, stride), (padding, padding), "c") == list(out.shape[1:])


def test_too_small_input_names_the_layer():
    with pytest.raises(ConvexpError, match="pool3: kernel 2x2 is larger than its padded input 1x1"):
        layer_table(VariableInputNet(8), 7, 7)


def test_nearest_channel_counts_are_81_and_82():
    nearest = nearest_channel_counts(29_066, range(1, 200))[:2]
    assert [(e["channels"], e["parameters"]) for e in nearest] == [(81, 29_029), (82, 29_328)]


def test_count_params_cli_match_and_json(tmp_path):
    result = invoke("count-params", "--match", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "29,029" in result.stdout and "16 x 383 x 511" in result.stdout
    (run,) = tmp_path.iterdir()
    data = json.loads((run / "params.json").read_text())
    assert [e["channels"] for e in data["match"]] == [81, 82]
    assert data["networks"]["MNISTConvNet"]["parameters"] == 29_066
    assert data["networks"]["VariableInputNet(N=81)"]["parameters"] == 29_029


def test_count_params_proves_varres_best_fits_the_budget(tmp_path):
    """configs/varres-best.yaml's network, counted layer by layer: within MNISTConvNet's 29,066."""
    result = invoke("count-params", "--match", "--set", "widths=[16, 32, 32]", "--set", "channels=49",
                     "--set", "norm=batch", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    data = json.loads((run / "params.json").read_text())
    network = data["networks"]["VariableInputNet(N=49, widths=[16, 32, 32], norm=batch)"]
    assert network["parameters"] == 28_838 <= data["networks"]["MNISTConvNet"]["parameters"]
    rows = network["inputs"]["32"]
    assert sum(r["parameters"] for r in rows) == 28_838 and rows[-2]["output_shape"] == [49]
    assert "conv4 3x3 + BatchNorm2d + ReLU" in [r["layer"] for r in rows]
    # the closest N is 50, 72 over the budget; 49 is the largest within it
    assert [(e["channels"], e["difference"]) for e in data["match"]] == [(50, 72), (49, -228)]

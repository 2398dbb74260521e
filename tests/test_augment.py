"""Augmentation pipeline: shape, dtype, range, reproducibility, fresh draws, config errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from convexp.augment import affine_matrix, build_pipeline, resample
from convexp.errors import ConvexpError

REPORT_PIPELINE = [
    {"name": "RandomAffine", "degrees": 15, "translate": [0.1, 0.1], "scale": [0.9, 1.1]},
    {"name": "RandomPerspective", "distortion_scale": 0.1, "p": 0.5},
    {"name": "GaussianBlur", "kernel_size": 3, "sigma": [0.1, 1.0]},
]


@pytest.fixture
def digits():
    images = torch.zeros(8, 1, 28, 28)
    images[:, :, 8:20, 12:16] = 1.0  # a bar in the middle, black around it
    return images


def test_shape_dtype_and_range_are_kept(digits):
    out = build_pipeline(REPORT_PIPELINE)(digits, torch.Generator().manual_seed(0))
    assert out.shape == digits.shape and out.dtype == digits.dtype
    assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6
    assert not torch.equal(out, digits)


def test_reproducible_under_a_seed_and_fresh_per_draw(digits):
    pipeline = build_pipeline(REPORT_PIPELINE)
    a = pipeline(digits, torch.Generator().manual_seed(7))
    b = pipeline(digits, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    generator = torch.Generator().manual_seed(7)
    first, second = pipeline(digits, generator), pipeline(digits, generator)  # two epochs
    assert not torch.allclose(first, second)


def test_each_image_gets_its_own_parameters(digits):
    out = build_pipeline([{"name": "RandomRotation", "degrees": 40}])(digits, torch.Generator().manual_seed(1))
    assert not torch.allclose(out[0], out[1])  # same input digit, different draws


def test_zero_strength_is_identity(digits):
    pipeline = build_pipeline([{"name": "RandomAffine", "degrees": 0}, {"name": "RandomPerspective", "distortion_scale": 0.0, "p": 1.0}])
    torch.testing.assert_close(pipeline(digits, torch.Generator().manual_seed(0)), digits, atol=1e-5, rtol=0)


def test_affine_matches_a_known_rotation():
    # A 90 degree rotation moves the top-left quadrant's pixel to the top-right.
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 0] = 1.0
    matrix = affine_matrix(torch.tensor([math.pi / 2]), torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    rotated = resample(image, matrix, 0.0)
    assert rotated[0, 0, 0, 3] == pytest.approx(1.0, abs=1e-5)


def test_blur_keeps_mass_and_background_fill_is_respected(digits):
    blurred = build_pipeline([{"name": "GaussianBlur", "kernel_size": 5, "sigma": 1.0}])(digits, torch.Generator())
    assert float(blurred.sum()) == pytest.approx(float(digits.sum()), rel=1e-4)
    expected = F.conv2d(F.pad(digits, (2, 2, 2, 2), mode="reflect"), gaussian_2d(5, 1.0))
    torch.testing.assert_close(blurred, expected)
    shifted = build_pipeline([{"name": "RandomAffine", "degrees": 0, "translate": [0.5, 0.5]}], background=-0.5)
    assert float(shifted(digits - 0.5, torch.Generator().manual_seed(0)).min()) >= -0.5 - 1e-6


def gaussian_2d(size, sigma):
    x = torch.arange(size, dtype=torch.float32) - size // 2
    line = torch.exp(-(x**2) / (2 * sigma**2))
    line = line / line.sum()
    return (line[:, None] * line[None, :]).view(1, 1, size, size)


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"name": "RandomFlip"}, "unknown augmentation 'RandomFlip'; allowed: RandomAffine, RandomRotation, RandomPerspective, GaussianBlur"),
        ({"name": "RandomAffine", "degrees": 10, "angle": 3}, "RandomAffine has no argument 'angle'; its arguments: degrees, translate, scale"),
        ({"name": "RandomAffine"}, "RandomAffine needs degrees"),
        ({"name": "RandomAffine", "degrees": -5}, "degrees must be 0 or more"),
        ({"name": "RandomAffine", "degrees": 5, "translate": [2, 0]}, "translate must be [fx, fy] with fractions in [0, 1]"),
        ({"name": "GaussianBlur", "kernel_size": 4}, "kernel_size must be an odd positive integer"),
        ({"name": "GaussianBlur", "sigma": [2, 1]}, "range [2.0, 1.0] is reversed"),
        ({"name": "RandomPerspective", "p": 1.5}, "p must be in [0, 1]"),
        ({"degrees": 3}, "must be a mapping with a 'name'"),
    ],
)
def test_bad_augmentation_config(spec, message):
    with pytest.raises(ConvexpError) as info:
        build_pipeline([spec])
    assert message in str(info.value)


def test_augmentation_never_waits_for_the_device(monkeypatch):
    """torch.linalg.solve syncs a GPU with the CPU on every call (its error check); the pipeline
    must not use it. Caught here on the CPU by making it fail."""
    def syncing_solve(*args, **kwargs):
        raise AssertionError("torch.linalg.solve syncs a GPU every batch: use solve_ex")

    monkeypatch.setattr(torch.linalg, "solve", syncing_solve)
    pipeline = build_pipeline([{"name": "RandomPerspective", "distortion_scale": 0.5, "p": 1.0},
                               {"name": "RandomAffine", "degrees": 10}])
    out = pipeline(torch.rand(8, 1, 28, 28), torch.Generator().manual_seed(0))
    assert out.shape == (8, 1, 28, 28) and torch.isfinite(out).all()


def test_a_blur_larger_than_the_image_is_one_line():
    pipeline = build_pipeline([{"name": "GaussianBlur", "kernel_size": 61}])
    with pytest.raises(ConvexpError) as info:
        pipeline(torch.rand(2, 1, 28, 28), torch.Generator().manual_seed(0))
    assert "GaussianBlur kernel_size 61 does not fit 28x28 images: use an odd size of at most 55" in str(info.value)
    assert build_pipeline([{"name": "GaussianBlur", "kernel_size": 55}])(torch.rand(2, 1, 28, 28), torch.Generator()).shape == (2, 1, 28, 28)


def test_preview_grid_places_each_draw_in_its_cell_with_gaps_between(tmp_path):
    from convexp.plots import GRID_GAP, augmentation_grid, image_grid

    originals, draws = torch.rand(3, 1, 5, 4), [torch.rand(3, 1, 5, 4) for _ in range(2)]
    grid = image_grid([originals] + draws)
    assert grid.shape == (3 * 5 + 2 * GRID_GAP, 3 * 4 + 2 * GRID_GAP)
    top, left = 2 * (5 + GRID_GAP), 1 * (4 + GRID_GAP)  # row 2, draw 1
    assert torch.equal(grid[top : top + 5, left : left + 4], draws[0][2, 0])
    assert torch.isnan(grid[5 : 5 + GRID_GAP]).all() and torch.isnan(grid[:, 4 : 4 + GRID_GAP]).all()
    assert torch.isnan(grid).sum() == grid.numel() - 9 * 5 * 4  # nothing but cells and gaps
    augmentation_grid(originals, draws, tmp_path / "augmentations.png")
    assert (tmp_path / "augmentations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Training augmentations drawn per sample, for a whole batch at once, on the training device.

Names and arguments follow torchvision (RandomAffine, RandomRotation, RandomPerspective,
GaussianBlur) so a config reads like the report's pipeline, but each transform here draws its
own parameters for every image of a batch and applies them in one `grid_sample` or grouped
convolution, instead of one PIL image at a time.

Every transform maps images (b, 1, h, w) -> (b, 1, h, w), keeps the dtype, and fills uncovered
pixels with the background value (black), so values stay in the input's range.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from convexp.errors import ConvexpError

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


# -- the transforms -----------------------------------------------------------------------------
# A geometric transform draws, per image, a 3x3 matrix mapping output pixel coordinates (in
# grid_sample's [-1, 1] units) to input coordinates. Consecutive geometric transforms are
# composed into one matrix and resampled once: cheaper, and no double interpolation blur.


@dataclass
class Geometric:
    draw: Callable[[int, torch.Generator, torch.device], torch.Tensor]  # -> (b, 3, 3)


@dataclass
class Pixelwise:
    apply: Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def is_number(value: Any) -> bool:
    """A finite int or float: YAML's .nan and .inf are floats too, and would train on NaN images."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def as_range(value: Any, name: str, symmetric: bool = True) -> tuple[float, float]:
    """`d` -> (-d, d); `[lo, hi]` -> (lo, hi)."""
    if is_number(value):
        if value < 0:
            raise ConvexpError(f"{name} must be 0 or more; got {value}")
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value):
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise ConvexpError(f"{name} range [{low}, {high}] is reversed: write [low, high]")
        return low, high
    raise ConvexpError(f"{name} must be a finite number or a [low, high] pair of them; got {value!r}")


MAX_DEGREES = 180  # U(-180, 180) already reaches every angle; more only skews the draw


def random_affine(degrees: Any, translate: Any = None, scale: Any = None) -> Geometric:
    """Rotation by U(degrees), shift by up to translate=(fx, fy) of the size, zoom by U(scale)."""
    return affine(degrees, translate, scale, "RandomAffine")


def affine(degrees: Any, translate: Any, scale: Any, name: str) -> Geometric:
    """random_affine's work; `name` is the transform the config named, for its error messages."""
    rotation = as_range(degrees, f"{name} degrees")
    if max(map(abs, rotation)) > MAX_DEGREES:
        raise ConvexpError(f"{name} degrees must be within [-{MAX_DEGREES}, {MAX_DEGREES}]; got {degrees!r}")
    shift = (0.0, 0.0)
    if translate is not None:
        if not (isinstance(translate, (list, tuple)) and len(translate) == 2
                and all(is_number(t) and 0 <= t <= 1 for t in translate)):
            raise ConvexpError(f"RandomAffine translate must be [fx, fy] with fractions in [0, 1]; got {translate!r}")
        shift = (float(translate[0]), float(translate[1]))
    zoom = as_range(scale, "RandomAffine scale", symmetric=False) if scale is not None else (1.0, 1.0)
    if zoom[0] <= 0:
        raise ConvexpError(f"RandomAffine scale must be positive; got {scale!r}")

    def draw(b: int, generator: torch.Generator, device) -> torch.Tensor:
        angle = torch.deg2rad(uniform(b, *rotation, generator, device))
        # Shifts in [-1, 1] grid units: a fraction f of the size is 2f units.
        tx = uniform(b, -2 * shift[0], 2 * shift[0], generator, device)
        ty = uniform(b, -2 * shift[1], 2 * shift[1], generator, device)
        s = uniform(b, *zoom, generator, device)
        return affine_matrix(angle, s, tx, ty)

    return Geometric(draw)


def affine_matrix(angle: torch.Tensor, s: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Content moved by p_out = s·R(angle)·p_in + t, so p_in = Rᵀ(p_out - t) / s: (b, 3, 3)."""
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    zeros, ones = torch.zeros_like(cos), torch.ones_like(cos)
    return torch.stack(
        [
            torch.stack([cos, sin, -(cos * tx + sin * ty)], dim=1),
            torch.stack([-sin, cos, -(-sin * tx + cos * ty)], dim=1),
            torch.stack([zeros, zeros, ones], dim=1),
        ],
        dim=1,
    )


def random_rotation(degrees: Any) -> Geometric:
    return affine(degrees, None, None, "RandomRotation")


def random_perspective(distortion_scale: float = 0.5, p: float = 0.5) -> Geometric:
    """Each corner moves inwards by up to distortion_scale of the half size, with probability p."""
    if not is_number(distortion_scale) or not 0 <= distortion_scale <= 1:
        raise ConvexpError(f"RandomPerspective distortion_scale must be in [0, 1]; got {distortion_scale!r}")
    if not is_number(p) or not 0 <= p <= 1:
        raise ConvexpError(f"RandomPerspective p must be in [0, 1]; got {p!r}")

    def draw(b: int, generator: torch.Generator, device) -> torch.Tensor:
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
        moves = torch.rand(b, 4, 2, generator=generator, device=device) * distortion_scale
        active = torch.rand(b, generator=generator, device=device) < p
        end = corners - moves * active.view(b, 1, 1) * corners  # -corners points to the centre
        return solve_homography(end, corners.expand(b, 4, 2))  # output corners -> input corners

    return Geometric(draw)


def solve_homography(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """H (b, 3, 3) with H·[x, y, 1] ∝ [X, Y, 1] for four point pairs (b, 4, 2) each."""
    x, y = source[..., 0], source[..., 1]
    tx, ty = target[..., 0], target[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_x = torch.stack([x, y, ones, zeros, zeros, zeros, -x * tx, -y * tx], dim=-1)
    rows_y = torch.stack([zeros, zeros, zeros, x, y, ones, -x * ty, -y * ty], dim=-1)
    a = torch.cat([rows_x, rows_y], dim=1)  # (b, 8, 8)
    rhs = torch.cat([tx, ty], dim=1)  # (b, 8)
    # solve_ex, not solve: on a GPU, solve makes the CPU wait for the device to check for
    # singular systems, a sync every batch (augmented epochs took 3x plain ones on an H200 with
    # it). Four corners moved inwards by at most half the size never make a singular system.
    h = torch.linalg.solve_ex(a, rhs).result
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).view(-1, 3, 3)


def resample(images: torch.Tensor, matrix: torch.Tensor, background: float) -> torch.Tensor:
    """Bilinear resampling through output->input matrices (b, 3, 3); outside is background."""
    b, _, h, w = images.shape
    device = images.device
    ys = (torch.arange(h, device=device) * 2 + 1) / h - 1  # pixel centres, align_corners=False
    xs = (torch.arange(w, device=device) * 2 + 1) / w - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).view(1, h * w, 3)
    mapped = points @ matrix.transpose(1, 2)  # (b, h*w, 3)
    grid = (mapped[..., :2] / mapped[..., 2:]).view(b, h, w, 2)
    shifted = F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return shifted + background


def gaussian_blur(kernel_size: int = 3, sigma: Any = (0.1, 2.0)) -> Pixelwise:
    """Blur with a kernel_size Gaussian whose sigma is drawn per image (reflect padding)."""
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ConvexpError(f"GaussianBlur kernel_size must be an odd positive integer; got {kernel_size!r}")
    low, high = as_range(sigma, "GaussianBlur sigma", symmetric=False)
    if low <= 0:
        raise ConvexpError(f"GaussianBlur sigma must be positive; got {sigma!r}")

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = images.shape
        if kernel_size // 2 >= min(h, w):  # reflect padding needs pad < size; seen at the preview, before training
            raise ConvexpError(f"GaussianBlur kernel_size {kernel_size} does not fit {h}x{w} images: "
                               f"use an odd size of at most {2 * min(h, w) - 1}")
        sigmas = uniform(b, low, high, generator, images.device)
        offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - kernel_size // 2
        line = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigmas.view(-1, 1) ** 2))
        line = line / line.sum(dim=1, keepdim=True)  # (b, k), sums to 1: the range is kept
        kernels = (line.unsqueeze(2) * line.unsqueeze(1)).repeat_interleave(c, dim=0)  # (b*c, k, k)
        pad = kernel_size // 2
        x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(x, kernels.unsqueeze(1), groups=b * c).view(b, c, h, w)

    return Pixelwise(apply)


TRANSFORMS: dict[str, Callable[..., Transform]] = {
    "RandomAffine": random_affine,
    "RandomRotation": random_rotation,
    "RandomPerspective": random_perspective,
    "GaussianBlur": gaussian_blur,
}


# -- building a pipeline from config -------------------------------------------------------------


def build_pipeline(specs: list[dict[str, Any]], background: float = 0.0) -> Transform:
    """[{name: RandomAffine, degrees: 15, ...}, ...] -> one transform applying them in order."""
    steps = [build_one(spec, i) for i, spec in enumerate(specs)]

    @torch.no_grad()
    def pipeline(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        matrix = None  # geometric steps pending, composed: first step's matrix on the left
        for step in steps:
            if isinstance(step, Geometric):
                drawn = step.draw(images.shape[0], generator, images.device)
                matrix = drawn if matrix is None else matrix @ drawn
            else:
                if matrix is not None:
                    images, matrix = resample(images, matrix, background), None
                images = step.apply(images, generator)
        return images if matrix is None else resample(images, matrix, background)

    return pipeline


def build_one(spec: dict[str, Any], index: int) -> Geometric | Pixelwise:
    where = f"augment.transforms[{index}]"
    allowed = ", ".join(TRANSFORMS)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConvexpError(f"{where} must be a mapping with a 'name' (one of {allowed}); got {spec!r}")
    arguments = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    if name not in TRANSFORMS:
        raise ConvexpError(f"{where}: unknown augmentation {name!r}; allowed: {allowed}")
    factory = TRANSFORMS[name]
    parameters = list(inspect.signature(factory).parameters)
    for key in arguments:
        if key not in parameters:
            raise ConvexpError(f"{where}: {name} has no argument {key!r}; its arguments: {', '.join(parameters)}")
    required = [p for p, v in inspect.signature(factory).parameters.items() if v.default is inspect.Parameter.empty]
    missing = [p for p in required if p not in arguments]
    if missing:
        raise ConvexpError(f"{where}: {name} needs {', '.join(missing)}")
    try:
        return factory(**arguments)
    except (TypeError, ValueError) as exc:
        raise ConvexpError(f"{where}: bad {name} arguments {arguments}: {exc}") from None




def preview(pipeline: Transform, images: torch.Tensor, augment, seed: int, path, to_unit=lambda x: x) -> None:
    """`path` (plots/augmentations.png): augment.preview_digits digits beside
    augment.preview_draws augmented draws of each, from a stream apart from training's."""
    from convexp import plots

    originals = images[: augment.preview_digits]
    generator = torch.Generator(device=images.device).manual_seed(seed + 1000)  # not the training stream
    draws = [pipeline(originals, generator) for _ in range(augment.preview_draws)]
    plots.augmentation_grid(to_unit(originals), [to_unit(d) for d in draws], path)

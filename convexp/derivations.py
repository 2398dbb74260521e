"""Part 1 of the report, checked: every hand-derived backward of convexp/autograd.py against
PyTorch's own ops, at the report's shapes and at shapes drawn from a seed.

For each Function and shape: torch.autograd.gradcheck in float64 (finite differences against the
hand-written backward), gradgradcheck where the Function has a second derivative, and the
largest error of the forward and of every gradient against PyTorch's op in float32. For conv2d
also every OpInfo sample PyTorch tests its own F.conv2d with, the output-size formula over a
grid, the weight shape and the unfold layout. `convexp gradcheck` runs them
(experiments/gradcheck.py); the tests call the same checks.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from convexp import autograd
from convexp.models import UnfoldConv2d

TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # float32 against PyTorch: as torch.testing's float32 defaults, loosened for sums
LAYOUTS = {"unfold": "rows", "unfold-reference": "reference"}  # model.conv's names -> autograd.conv2d's algorithm

# The report's Part 1, a line each: what it derives, as it writes it.
FORMULAS = {
    "Q1": "S = X / Y: X∇ = S∇ / Y, Y∇ = -S∇ ⊙ X / Y²",
    "Q2": "Y = F(X) element-wise (the sigmoid): X∇ = Y∇ ⊙ F'(X), σ' = σ(1 - σ)",
    "Q3": "Y = W Xᵀ: W∇ = Y∇ X, X∇ = Y∇ᵀ W",
    "Q4": "Y_ij = x_i (expand to h x 16): x∇ = Σ_j Y∇_ij, the row sums",
    "conv Q1": "weight (c_out, c_in, kh, kw)",
    "conv Q2": "output size floor((n + 2p - d(k - 1) - 1) / s) + 1",
    "conv Q3": "unfold: each output pixel's receptive field as one row, U (b, p, k)",
    "conv Q4": "W∇ = Y∇ Uᵀ, summed over the batch",
    "conv Q5": "U∇ = Wᵀ Y∇, folded back onto X (fold)",
    "conv Q6": "the autograd Function: forward unfold + matmul, backward as Q4 and Q5",
}


@dataclass(frozen=True)
class Case:
    """One hand-written Function at one shape, beside PyTorch's op for the same maths."""

    question: str  # of the report: "Q1".."Q4", "conv Q6"
    function: str  # "divide", ..., "conv2d (unfold)"
    shape: str  # what the inputs are, for the table
    ours: Callable[..., torch.Tensor]
    theirs: Callable[..., torch.Tensor]
    inputs: tuple[tuple[int, ...], ...]  # shapes of the differentiable inputs
    names: tuple[str, ...]  # their names: "x", "weight", ...
    positive: tuple[int, ...] = ()  # indices of inputs kept away from zero (divisors)
    second_derivative: str = ""  # why gradgradcheck does not apply ("" when it does)
    fast: bool = False  # gradcheck's fast mode (random projections): for the network-sized shapes


@dataclass
class Row:
    """One line of results.csv: a check of one question, Function and shape."""

    question: str
    function: str
    shape: str
    check: str
    result: str  # "passed", "failed: ...", "not supported: ...", "skipped: ..."
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.result.startswith("failed")


# -- the cases -------------------------------------------------------------------------------------

ONCE_DIFFERENTIABLE = ("not supported: its backward writes the products in place into buffers "
                       "(@once_differentiable), so it has no second derivative")


def elementwise_cases(rng: random.Random, draws: int) -> list[Case]:
    """Questions 1-4 at the report's shapes, then at `draws` shapes drawn from `rng`."""
    def shapes(report: tuple[int, int]) -> list[tuple[int, int]]:
        return [report] + [(rng.randint(1, 6), rng.randint(1, 6)) for _ in range(draws)]

    cases = []
    for m, n in shapes((3, 4)):
        cases.append(Case("Q1", "divide", f"X, Y ({m}, {n})", autograd.Divide.apply, torch.div, ((m, n), (m, n)), ("x", "y"),
                          positive=(1,)))
        cases.append(Case("Q2", "sigmoid", f"X ({m}, {n})", autograd.Sigmoid.apply, torch.sigmoid, ((m, n),), ("x",)))
    for m, n in shapes((4, 5)):
        f = rng.randint(1, 6) if (m, n) != (4, 5) else 6
        cases.append(Case("Q3", "W Xᵀ", f"W ({m}, {f}), X ({n}, {f})", autograd.MatmulTransposed.apply,
                          lambda w, x: w @ x.t(), ((m, f), (n, f)), ("w", "x")))
    for h, _ in shapes((7, 16)):
        cases.append(Case("Q4", "expand", f"x ({h},) to ({h}, 16)", lambda x: autograd.Expand.apply(x, 16),
                          lambda x: x.unsqueeze(1).expand(-1, 16), ((h,),), ("x",)))
    return cases


@dataclass(frozen=True)
class ConvShape:
    where: str  # what the shape is in the report
    batch: int
    c_in: int
    c_out: int
    size: tuple[int, int]
    kernel: tuple[int, int] = (3, 3)
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    fast: bool = True


# MNISTConvNet's three layers (question 7), question 10's 5x5 stride-2 padding-1 kernel on a small
# image (its 768x1024 would take gradcheck hours), and the global-pooling net's layers at 32 px (N=81).
REPORT_CONVS = [
    ConvShape("MNISTConvNet conv1", 2, 1, 16, (28, 28)),
    ConvShape("MNISTConvNet conv2", 2, 16, 32, (14, 14)),
    ConvShape("MNISTConvNet conv3", 2, 32, 64, (7, 7)),
    ConvShape("question 10", 2, 3, 16, (20, 24), (5, 5), stride=2),
    ConvShape("VariableInputNet conv1", 2, 1, 16, (32, 32)),
    ConvShape("VariableInputNet conv2", 2, 16, 32, (16, 16)),
    ConvShape("VariableInputNet conv3 (N=81)", 2, 32, 81, (8, 8)),
]


def drawn_convs(rng: random.Random, draws: int) -> list[ConvShape]:
    """Small convolutions of every geometry (full gradcheck: each input and output entry)."""
    shapes = []
    while len(shapes) < draws:
        kernel = (rng.randint(1, 4), rng.randint(1, 4))
        stride, padding, dilation = rng.randint(1, 2), rng.randint(0, 2), rng.randint(1, 2)
        size = (rng.randint(4, 9), rng.randint(4, 9))
        if any(autograd.conv_output_size(n, k, stride, padding, dilation) < 1 for n, k in zip(size, kernel)):
            continue
        shapes.append(ConvShape(f"drawn {len(shapes) + 1}", rng.randint(1, 2), rng.randint(1, 3), rng.randint(1, 3), size,
                                kernel, stride, padding, dilation, fast=False))
    return shapes


def conv_cases(shapes: list[ConvShape]) -> list[Case]:
    cases = []
    for layout, algorithm in LAYOUTS.items():
        for s in shapes:
            options = {"stride": s.stride, "padding": s.padding, "dilation": s.dilation}
            text = (f"{s.where}: x ({s.batch}, {s.c_in}, {s.size[0]}, {s.size[1]}), weight ({s.c_out}, {s.c_in}, "
                    f"{s.kernel[0]}, {s.kernel[1]}), s={s.stride} p={s.padding} d={s.dilation}")
            cases.append(Case(
                "conv Q6", f"conv2d ({layout})", text,
                lambda x, w, b, options=options, algorithm=algorithm: autograd.conv2d(x, w, b, algorithm=algorithm, **options),
                lambda x, w, b, options=options: F.conv2d(x, w, b, **options),
                ((s.batch, s.c_in, *s.size), (s.c_out, s.c_in, *s.kernel), (s.c_out,)), ("x", "weight", "bias"),
                second_derivative=ONCE_DIFFERENTIABLE, fast=s.fast))
    return cases


# -- checking one case -------------------------------------------------------------------------------


def case_inputs(case: Case, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """float64 leaves from `generator`; divisors kept at |y| >= 0.5."""
    inputs = []
    for index, shape in enumerate(case.inputs):
        x = torch.randn(*shape, dtype=torch.float64, generator=generator)
        if index in case.positive:
            x = x.abs() + 0.5
        inputs.append(x.to(device).requires_grad_())
    return inputs


def attempt(check: Callable[[], bool]) -> str:
    try:
        return "passed" if check() else "failed"
    except Exception as exc:  # gradcheck raises GradcheckError naming the Jacobian that differs
        return f"failed: {str(exc).splitlines()[0][:200]}"


def float32_errors(case: Case, inputs: list[torch.Tensor], generator: torch.Generator) -> dict[str, tuple[float, float, bool]]:
    """{"forward" or input name: (max abs error, max relative error, within TOLERANCE)} of ours
    against PyTorch's op in float32, the gradients for one random output gradient."""
    ours_in = [x.detach().float().requires_grad_() for x in inputs]
    theirs_in = [x.detach().float().requires_grad_() for x in inputs]
    ours, theirs = case.ours(*ours_in), case.theirs(*theirs_in)
    grad = torch.randn(theirs.shape, generator=generator).to(theirs.device)
    pairs = {"forward": (ours.detach(), theirs.detach())}
    for name, a, b in zip(case.names, torch.autograd.grad(ours, ours_in, grad), torch.autograd.grad(theirs, theirs_in, grad)):
        pairs[name] = (a, b)
    return {name: error(a, b) for name, (a, b) in pairs.items()}


def error(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float, bool]:
    """Largest |ours - theirs|, the same relative to the largest |theirs|, and torch.allclose's verdict."""
    difference = float((ours - theirs).abs().max()) if theirs.numel() else 0.0
    scale = float(theirs.abs().max()) if theirs.numel() else 0.0
    return difference, difference / scale if scale else difference, bool(torch.allclose(ours, theirs, **TOLERANCE))


def check_case(case: Case, seed: int, device: torch.device) -> list[Row]:
    """gradcheck, gradgradcheck and float32 errors of one case: one row, or for conv2d three
    (Q6 the Function and its forward, Q4 the weight gradient, Q5 the input gradient)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = case_inputs(case, generator, device)
    first = attempt(lambda: gradcheck(case.ours, inputs, fast_mode=case.fast))
    second = case.second_derivative or attempt(lambda: gradgradcheck(case.ours, inputs))
    errors = float32_errors(case, inputs, generator)
    mode = "fast gradcheck (random projections)" if case.fast else "full gradcheck"
    checks = f"{mode}; gradgradcheck {second}; float32 against PyTorch"

    def row(question: str, names: list[str], check: str) -> Row:
        chosen = [errors[n] for n in names]
        within = all(ok for _, _, ok in chosen)
        result = first if question == case.question and first != "passed" else (
            "passed" if within else f"failed: float32 error beyond rtol/atol {TOLERANCE['rtol']:g} ({', '.join(names)})")
        if question == case.question and second.startswith("failed"):
            result = f"failed: gradgradcheck {second}"
        return Row(question, case.function, case.shape, check, result, max(e for e, _, _ in chosen),
                   max(r for _, r, _ in chosen), note=f"gradcheck {first}; gradgradcheck {second}")

    if not case.question.startswith("conv"):
        return [row(case.question, ["forward", *case.names], checks)]
    return [row("conv Q6", ["forward", "bias"], checks), row("conv Q4", ["weight"], "weight gradient, float32 against PyTorch"),
            row("conv Q5", ["x"], "input gradient, float32 against PyTorch")]


# -- the conv's other questions ------------------------------------------------------------------------


def weight_shape_row() -> Row:
    """conv Q1: the hand-written layer's weight has nn.Conv2d's shape (c_out, c_in, kh, kw)."""
    ours, theirs = UnfoldConv2d(3, 16, 5).weight.shape, nn.Conv2d(3, 16, 5).weight.shape
    result = "passed" if ours == theirs == (16, 3, 5, 5) else f"failed: {tuple(ours)} against nn.Conv2d's {tuple(theirs)}"
    return Row("conv Q1", "UnfoldConv2d", "3 -> 16 channels, 5x5 kernel", "weight shape against nn.Conv2d", result)


def output_size_rows(device: torch.device) -> list[Row]:
    """conv Q2: the formula against the shape F.conv2d produces, over a grid of sizes, kernels,
    strides, paddings and dilations; and the report's question 10 as printed."""
    grid = [g for g in itertools.product(range(1, 13), range(1, 6), range(1, 4), range(0, 3), range(1, 3))
            if autograd.conv_output_size(*g) >= 1]
    wrong = []
    without_plus_one = 0
    for size, kernel, stride, padding, dilation in grid:
        x = torch.zeros(1, 1, size, size, device=device)
        produced = F.conv2d(x, torch.zeros(1, 1, kernel, kernel, device=device), stride=stride, padding=padding,
                            dilation=dilation).shape[-1]
        if autograd.conv_output_size(size, kernel, stride, padding, dilation) != produced:
            wrong.append((size, kernel, stride, padding, dilation))
        if dilation == 1 and (size + 2 * padding - kernel) // stride != produced:
            without_plus_one += 1
    ours = "passed" if not wrong else f"failed: {len(wrong)} cases differ, e.g. (n, k, s, p, d) = {wrong[0]}"
    q10 = (autograd.conv_output_size(768, 5, 2, 1), autograd.conv_output_size(1024, 5, 2, 1))
    printed = "passed" if q10 == (383, 511) else f"failed: the formula gives {q10}"
    plain = sum(1 for g in grid if g[4] == 1)
    return [
        Row("conv Q2", "conv_output_size", f"{len(grid)} cases: n 1-12, k 1-5, s 1-3, p 0-2, d 1-2",
            "floor((n + 2p - d(k - 1) - 1) / s) + 1 against F.conv2d's output", ours),
        Row("conv Q2", "the report's question 10", "768 x 1024, k 5, s 2, p 1", "383 x 511, the report's own numbers", printed,
            note=f"the report prints w_new = floor((h + 2p - k) / s) without its + 1 (and with h for w): that formula "
                 f"differs from PyTorch in {without_plus_one} of {plain} undilated cases; its numbers use the + 1"),
    ]


def unfold_row(device: torch.device) -> Row:
    """conv Q3: the hand-written unfold lays out exactly what F.unfold does (reordered rows)."""
    x = torch.randn(2, 3, 9, 8, generator=torch.Generator().manual_seed(0)).to(device)
    geometry = autograd.conv_geometry(x, torch.zeros(4, 3, 3, 2), 2, 1, 1, 1)
    out = autograd.output_size(x, torch.zeros(4, 3, 3, 2), geometry)
    ours = autograd.unfold_rows(x, (3, 2), geometry, out)[0]  # (b·p, k) with k ordered (kh, kw, c)
    theirs = F.unfold(x, (3, 2), padding=1, stride=2)  # (b, c·kh·kw, p), k ordered (c, kh, kw)
    theirs = theirs.view(2, 3, 3, 2, -1).permute(0, 4, 2, 3, 1).reshape(ours.shape)
    difference = float((ours - theirs).abs().max())
    return Row("conv Q3", "unfold (rows layout)", "x (2, 3, 9, 8), kernel 3x2, s=2 p=1", "the rows F.unfold gives, reordered",
               "passed" if difference == 0 else f"failed: differs by {difference:g}", difference, difference)


def opinfo_rows(device: torch.device) -> list[Row]:
    """conv Q6: PyTorch's own OpInfo samples of nn.functional.conv2d (stride, padding, dilation,
    groups, 'same' and 'valid', unbatched) through each layout, float64 and float32."""
    try:
        samples_of = conv2d_opinfo().sample_inputs
    except ImportError as exc:
        why = (f"skipped: PyTorch's OpInfo samples cannot be imported ({exc.name or exc}): "
               "pip install expecttest hypothesis (make setup installs them)")
        return [Row("conv Q6", f"conv2d ({layout})", "OpInfo samples", "nn.functional.conv2d's OpInfo samples", why)
                for layout in LAYOUTS]
    rows = []
    for layout, algorithm in LAYOUTS.items():
        for dtype in (torch.float64, torch.float32):
            samples = list(samples_of(device, dtype, requires_grad=True))
            failures = []
            for n, sample in enumerate(samples):
                try:
                    run_opinfo_sample(sample, algorithm, {} if dtype == torch.float64 else TOLERANCE)
                except (AssertionError, ValueError, RuntimeError) as exc:
                    failures.append(f"sample {n}: {str(exc).splitlines()[0][:120]}")
            result = "passed" if not failures else f"failed: {len(failures)} of {len(samples)}: {failures[0]}"
            rows.append(Row("conv Q6", f"conv2d ({layout})", f"{len(samples)} OpInfo samples, {str(dtype).removeprefix('torch.')}",
                            f"{len(samples) - len(failures)} of {len(samples)} samples equal F.conv2d, forward and gradients",
                            result))
    return rows


def conv2d_opinfo():
    """PyTorch's OpInfo of nn.functional.conv2d (needs the test packages expecttest and hypothesis)."""
    import logging

    import expecttest  # noqa: F401  (what the import below needs; its absence named here)
    import hypothesis  # noqa: F401

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its "no CUDA toolkit" means nothing here
    from torch.testing._internal.common_methods_invocations import op_db

    (op,) = [o for o in op_db if o.name == "nn.functional.conv2d" and o.variant_test_name == ""]
    return op


def run_opinfo_sample(sample, algorithm: str, tolerance: dict) -> None:
    """One OpInfo sample through autograd.conv2d against F.conv2d: forward and every gradient
    equal within `tolerance` (torch.testing.assert_close raises naming the difference)."""
    weight, *rest = sample.args
    bias = rest[0] if rest else sample.kwargs.get("bias")
    options = {k: v for k, v in sample.kwargs.items() if k != "bias"}
    inputs = [t for t in (sample.input, weight, bias) if isinstance(t, torch.Tensor) and t.requires_grad]
    ours = autograd.conv2d(sample.input, weight, bias, algorithm=algorithm, **options)
    expected = F.conv2d(sample.input, weight, bias, **options)
    torch.testing.assert_close(ours, expected, **tolerance)
    grad = torch.randn_like(expected)
    for mine, theirs in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(mine, theirs, **tolerance)


# -- all of Part 1 -----------------------------------------------------------------------------------


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)

    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.failed]

    def by_question(self) -> dict[str, dict]:
        """Per question: its formula, how many checks, how many failed, the largest float32 error."""
        summary: dict[str, dict] = {}
        for question in FORMULAS:
            rows = [r for r in self.rows if r.question == question]
            errors = [r.max_abs_error for r in rows if r.max_abs_error is not None]
            summary[question] = {"formula": FORMULAS[question], "checks": len(rows),
                                 "failed": sum(r.failed for r in rows), "max_abs_error": max(errors) if errors else None,
                                 "verdict": "failed" if any(r.failed for r in rows) else "checked" if rows else "not run"}
        return summary


def check_part_one(seed: int, random_shapes: int, device: torch.device, opinfo: bool = True) -> Results:
    """Every check of Part 1, in the report's order."""
    rng = random.Random(seed)
    cases = elementwise_cases(rng, random_shapes) + conv_cases(REPORT_CONVS + drawn_convs(rng, random_shapes))
    results = Results()
    for index, case in enumerate(cases):
        results.rows += check_case(case, seed * 1000 + index, device)
    results.rows += [weight_shape_row(), *output_size_rows(device), unfold_row(device)]
    if opinfo:
        results.rows += opinfo_rows(device)
    order = list(FORMULAS)
    results.rows.sort(key=lambda r: order.index(r.question))
    return results

"""`convexp gradcheck`: Part 1 of the report, its derivations checked (questions 1-4, conv 1-6).

Every hand-written backward of convexp/autograd.py against PyTorch's own ops: gradcheck and
gradgradcheck in float64, float32 errors of the forward and every gradient, PyTorch's OpInfo
samples of F.conv2d, the output-size formula over a grid (convexp/derivations.py does the checks).
One row per question, Function and shape in results.csv; a check that fails fails the run, exit 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from convexp.config import Invalid, RunConfig
from convexp.errors import ConvexpError
from convexp.spec import Experiment

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.runs import RunFolder

MAX_RANDOM_SHAPES = 50  # each drawn conv shape runs a full gradcheck: seconds each at most


@dataclass
class GradcheckConfig(RunConfig):
    # `seed` draws the random shapes and inputs
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    random_shapes: int = 3  # per Function, drawn from `seed`, besides the report's own shapes
    opinfo: bool = True  # PyTorch's OpInfo samples of nn.functional.conv2d (need expecttest and hypothesis)

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.random_shapes <= MAX_RANDOM_SHAPES:
            raise Invalid("random_shapes", f"config key '{{key}}' must be from 0 to {MAX_RANDOM_SHAPES}; got {self.random_shapes}")


class DerivationFailed(ConvexpError):
    """A hand-derived backward disagrees with PyTorch: not bad input, a wrong result (exit 1)."""

    exit_code = 1


def run(config: GradcheckConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    from convexp.derivations import check_part_one

    results = check_part_one(config.seed, config.random_shapes, device, config.opinfo)
    run.write_csv("results.csv", [asdict(row) for row in results.rows])
    reporter.table("Part 1: every check (float32 errors against PyTorch's op)",
                   ["question", "function", "shape", "check", "result", "max abs error"],
                   [[r.question, r.function, r.shape, r.check, r.result,
                     "-" if r.max_abs_error is None else f"{r.max_abs_error:.2e}"] for r in results.rows])
    questions = results.by_question()
    reporter.table("Part 1: the derivations, checked", ["question", "derivation", "checks", "failed", "largest error", "verdict"],
                   [[q, e["formula"], e["checks"], e["failed"], "-" if e["max_abs_error"] is None else f"{e['max_abs_error']:.2e}",
                     e["verdict"]] for q, e in questions.items()])
    headline = {"part1": questions, "checks": len(results.rows), "failed_checks": len(results.failed())}
    failed = results.failed()
    if failed:
        run.update_summary(**headline)  # what was checked is kept beside the failure
        first = failed[0]
        raise DerivationFailed(f"{len(failed)} of {len(results.rows)} checks of Part 1 failed, first {first.question} "
                               f"{first.function} at {first.shape}: {first.result}; results.csv lists them all")
    return headline


def checks_and_largest_error(summary: dict) -> str | None:
    """`convexp runs`: how many checks passed, and the largest float32 error."""
    part1 = summary.get("part1")
    if not part1:
        return None
    errors = [q["max_abs_error"] for q in part1.values() if q["max_abs_error"] is not None]
    return f"{summary['checks'] - summary['failed_checks']}/{summary['checks']} checks, largest error {max(errors):.1e}"


SPEC = Experiment(
    name="gradcheck",
    help="Check every hand derivation of Part 1 (questions 1-4, conv 1-6) against PyTorch: gradcheck, errors, OpInfo.",
    config=GradcheckConfig,
    run=run,
    questions=("part1",),
    key_metric=checks_and_largest_error,
)

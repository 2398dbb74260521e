"""`convexp make-varres`: build the mnist-varres layout from MNIST and print its counts."""

from __future__ import annotations

from pathlib import Path

from convexp.config import SEED_LIMIT
from convexp.console import Reporter
from convexp.errors import ConvexpError
from convexp.lifecycle import interrupts_as_keyboard_interrupt
from convexp.varres import build_varres

MAX_CANVAS = 1024


class BuildInterrupted(ConvexpError):
    """Ctrl-C or SIGTERM while building: exit 130, as an interrupted run exits."""

    exit_code = 130


def make(mnist_root: Path, out: Path, seed: int, center: bool, sizes_text: str) -> None:
    try:
        sizes = tuple(int(s) for s in sizes_text.split(","))
    except ValueError:
        raise ConvexpError(f"--sizes {sizes_text!r} must be comma-separated integers, e.g. 32,48,64") from None
    if len(set(sizes)) != len(sizes):
        raise ConvexpError(f"--sizes {sizes_text!r} lists a size twice: list each once, e.g. 32,48,64")
    if max(sizes) > MAX_CANVAS:
        raise ConvexpError(f"--sizes {sizes_text!r}: a {max(sizes)} px canvas per digit is absurd (70,000 of them); "
                           f"use sizes from 28 to {MAX_CANVAS}")
    if not 0 <= seed < SEED_LIMIT:
        raise ConvexpError(f"--seed must be from 0 to {SEED_LIMIT - 1}; got {seed}")
    reporter = Reporter()
    try:
        with interrupts_as_keyboard_interrupt():  # SIGTERM too, as for a run
            counts = build_varres(mnist_root, out, seed=seed, center=center, sizes=sizes)
    except KeyboardInterrupt:
        if out.exists():  # stopped while caching the images it had written whole
            raise BuildInterrupted(f"make-varres interrupted after {out} was written whole: it is ready to use (its images "
                                   "were not all cached, so the first run decodes them)") from None
        raise BuildInterrupted(f"make-varres interrupted: {out} was not written and its partial files are removed "
                               "(a build cannot go on from where it stopped); run the same command again to build it") from None
    for split, counter in counts.items():
        rows = [[digit, *(counter[(digit, s)] for s in sizes), sum(counter[(digit, s)] for s in sizes)] for digit in range(10)]
        rows.append(["all", *(sum(counter[(d, s)] for d in range(10)) for s in sizes), sum(counter.values())])
        reporter.table(f"{out}/{split}: images per digit and resolution",
                    ["digit", *(f"{s} px" for s in sizes), "total"], rows)
    reporter.line(f"wrote {sum(sum(c.values()) for c in counts.values())} images to {out}")

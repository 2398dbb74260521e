"""`convexp make-varres`: build the mnist-varres layout from MNIST and print its counts."""

from __future__ import annotations

from pathlib import Path

from convexp.console import Reporter
from convexp.errors import ConvexpError
from convexp.varres import build_varres


def make(mnist_root: Path, out: Path, seed: int, center: bool, sizes_text: str) -> None:
    try:
        sizes = tuple(int(s) for s in sizes_text.split(","))
    except ValueError:
        raise ConvexpError(f"--sizes {sizes_text!r} must be comma-separated integers, e.g. 32,48,64") from None
    reporter = Reporter()
    counts = build_varres(mnist_root, out, seed=seed, center=center, sizes=sizes)
    for split, counter in counts.items():
        rows = [[digit, *(counter[(digit, s)] for s in sizes), sum(counter[(digit, s)] for s in sizes)] for digit in range(10)]
        rows.append(["all", *(sum(counter[(d, s)] for d in range(10)) for s in sizes), sum(counter.values())])
        reporter.table(f"{out}/{split}: images per digit and resolution",
                    ["digit", *(f"{s} px" for s in sizes), "total"], rows)
    reporter.line(f"wrote {sum(sum(c.values()) for c in counts.values())} images to {out}")

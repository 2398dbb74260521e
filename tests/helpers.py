"""What several test modules share: running the CLI, the real data's options, small run folders,
and interrupting a run at a chosen batch. Test modules import from here (never from conftest.py
or from one another: pytest loads conftest.py itself, and a second import would load it twice)."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from convexp import derivations

REPO = Path(__file__).resolve().parents[1]


# -- the real data --------------------------------------------------------------------------------


def data_dir() -> Path | None:
    value = os.environ.get("CONVEXP_DATA")
    return Path(value) if value else None


NO_DATA = "real-data test: set CONVEXP_DATA to the folder holding mnist-mini (e.g. ../shared/data)"


def mini(root: Path) -> list[str]:
    """CLI options for mnist-mini: its root, and a validation fifth (the configs' 10,000 is the full set's)."""
    return ["--set", f"data.root={root}", "--set", "data.val_split=0.2"]


# For runs that test plumbing (resume, the executors, the generic sweep), not accuracy: each
# evaluation measures 500 images (2 batches of 250 per split) instead of the whole split. Their
# assertions compare runs with each other; evaluating whole splits is tested by the accuracy floors.
SMOKE_EVAL = ["--set", "train.eval_batch_size=250", "--set", "train.max_eval_batches=2"]


# -- the command line -----------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m convexp ARGS` in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "convexp", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def invoke(*args: str) -> subprocess.CompletedProcess:
    """`convexp ARGS` in this process, through cli.main: what run_cli does, without starting Python
    and importing torch again (about 5 s a call). Error cases, and real runs that need no process
    of their own."""
    from convexp.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous, columns = Path.cwd(), os.environ.get("COLUMNS")
    os.chdir(REPO)
    os.environ["COLUMNS"] = str(max(200, int(columns or 0)))  # tables at least as wide as run_cli's
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(previous)
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return subprocess.CompletedProcess(["convexp", *args], code, out.getvalue(), err.getvalue())


def only_run(out: Path) -> Path:
    """The one run folder a command wrote into `out`."""
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


# -- interrupting a run where the test chooses --------------------------------------------------


@contextlib.contextmanager
def sigint_at_batch(batch: int) -> Iterator[None]:
    """Ctrl-C as a run meets it, at a batch the test chooses: a real SIGINT to this process right
    after the `batch`-th training batch it runs (counted over every run it trains, a study's
    children one after another included). The run's own handler turns it into the interrupt, as
    for a user's Ctrl-C; the count is exact where waiting for a file to appear is not."""
    import convexp.train as train

    original = train.raise_if_interrupted  # the training loop calls it once after every batch
    seen = 0

    def count_then_check() -> None:
        nonlocal seen
        seen += 1
        if seen == batch:
            os.kill(os.getpid(), signal.SIGINT)
        original()

    train.raise_if_interrupted = count_then_check
    try:
        yield
    finally:
        train.raise_if_interrupted = original


def interrupted_then_resumed(args: list[str], out: Path, batch: int) -> Path:
    """`convexp ARGS --out OUT` stopped by Ctrl-C after its `batch`-th training batch, checked to
    have stopped resumable, then `convexp resume`d to the end: the run folder."""
    import json

    with sigint_at_batch(batch):
        stopped = invoke(*args, "--out", str(out), "-q")
    assert stopped.returncode == 130, stopped.stdout[-2000:] + stopped.stderr
    run = only_run(out)
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    resumed = invoke("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
    assert "resuming" in resumed.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    return run


def assert_same_files(run: Path, straight: Path, names: tuple[str, ...] = ("metrics.csv", "batches.csv")) -> None:
    """Every `names` file under `straight` (its child runs' too) byte for byte equal under `run`,
    and no training file in one that the other lacks."""
    expected = sorted(p.relative_to(straight) for name in names for p in straight.rglob(name))
    found = sorted(p.relative_to(run) for name in names for p in run.rglob(name))
    assert expected and found == expected, (found, expected)
    for relative in expected:
        assert (run / relative).read_bytes() == (straight / relative).read_bytes(), relative


# -- the report's verdict rule, written out again so that tests check convexp against it ----------


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (n - 1), from Python's statistics module; 0 for one value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def stated(values: list[float], digits: int = 4) -> str:
    """A number over seeds as the report states it: 'mean ± std (n=3)', or 'mean (1 seed)'."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} (1 seed)" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f} (n={len(values)})"


def expected_verdict(value: float, precision: float, ours: list[float]) -> str:
    """The report's value ± precision against our mean ± 2 std: overlap, wholly above, wholly below."""
    mean, std = mean_std(ours)
    if mean + 2 * std < value - precision:
        return "below"
    if mean - 2 * std > value + precision:
        return "better"
    return "reproduced"



# -- processes of their own -----------------------------------------------------------------------


def run_main(argv: list[str], log: str) -> None:
    """In a forked process: `convexp ARGV`, its terminal output into `log`."""
    from convexp.cli import main

    with open(log, "w") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.exit(main(argv))


class CliProcess:
    """`convexp ARGS` running in a process of its own, forked from the server the executor's
    workers start from (torch already imported): signals reach it as they reach `convexp`."""

    def __init__(self, *args: str, log: Path):
        from convexp.execution.workers import worker_context

        self.log = log
        self.process = worker_context().Process(target=run_main, args=(list(args), str(log)))
        self.process.start()

    def poll(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float = 120) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def output(self) -> str:
        return self.log.read_text() if self.log.is_file() else ""


# -- small data and runs --------------------------------------------------------------------------


def tiny_splits(n: int = 64, size: int = 28, buckets: tuple[int, ...] = (28,)):
    """Random train/val/test splits of n images per bucket (seeded), for loops, not accuracy."""
    from convexp.data import Split, Splits

    g = torch.Generator().manual_seed(0)

    def split():
        return Split([torch.rand(n, 1, s, s, generator=g) for s in buckets],
                     [torch.randint(0, 10, (n,), generator=g) for _ in buckets])

    return Splits(split(), split(), split())


def train_into(tmp_path: Path, splits, cfg, seed: int = 0, name: str = "run", conv: str = "native"):
    """MNISTConvNet with the `conv` layout, trained by train_unit inside the run's life manager,
    as every experiment runs it."""
    from convexp.config import Model
    from convexp.console import Reporter
    from convexp.experiments.train_mnist import TrainMnistConfig
    from convexp.lifecycle import open_run
    from convexp.models import MNISTConvNet
    from convexp.runs import RunFolder
    from convexp.train import seed_everything, train_unit

    seed_everything(seed)
    model = MNISTConvNet(conv)
    run = RunFolder(tmp_path / name)
    run.path.mkdir()
    reporter = Reporter(quiet=True)
    config = TrainMnistConfig(seed=seed, model=Model(conv=conv), train=cfg)
    with open_run(run, "train-mnist", config, torch.device("cpu"), reporter):
        return run, train_unit(run, model, splits, cfg, seed=seed, device=torch.device("cpu"), reporter=reporter)


def float64(*shape: int, device: str = "cpu", positive: bool = False):
    """A float64 leaf for gradcheck, from the test's seeded generator (conftest seeds each test)."""
    x = torch.randn(*shape, dtype=torch.float64, device=device)
    if positive:
        x = x.abs() + 0.5  # keep divisors away from zero
    return x.requires_grad_()


def write_pngs(root: Path, sizes_per_digit, corrupt: str | None = None) -> Path:
    """A tiny synthetic varres folder: for each split, digit d gets one image per listed size."""
    from PIL import Image

    for split in ("train", "test"):
        for digit in range(10):
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for n, size in enumerate(sizes_per_digit):
                Image.new("L", (size, size), color=digit * 20).save(folder / f"{n}.png")
    if corrupt:
        (root / "train" / "3" / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def course_varres_subset(out: Path, per_digit: dict[str, int]) -> Path:
    """The course's own mnist-varres ($CONVEXP_DATA/mnist-varres), the first `per_digit[split]`
    images of each digit, linked (not copied) into `out` in its ImageFolder layout."""
    source = data_dir() / "mnist-varres"
    for split, count in per_digit.items():
        for digit in range(10):
            folder = out / split / str(digit)
            folder.mkdir(parents=True)
            for png in sorted((source / split / str(digit)).glob("*.png"))[:count]:
                (folder / png.name).symlink_to(png)
    return out


# -- the hand-written conv's test cases (its CPU tests and tests/test_cuda.py) -----------------------

ALGORITHMS = ["rows", "reference"]  # the fast layout and the report's F.unfold/F.fold layout

# The grid asked for: stride 1 and 2, padding 0/1/2, kernels 3x3, 5x5, 3x5. gradcheck runs it in
# float64 on small shapes (its cost grows with inputs x outputs); the wide shapes (channels
# 1..8, batch 1..4) are checked against F.conv2d in float32, forward and every gradient.
GEOMETRY_GRID = list(itertools.product((1, 2), (0, 1, 2), ((3, 3), (5, 5), (3, 5))))
CHANNELS_BATCH = [(1, 2, 1), (3, 4, 2), (8, 5, 4), (2, 8, 3), (5, 1, 1), (4, 6, 2)]
WIDE_GRID = [(*geometry, *CHANNELS_BATCH[i % len(CHANNELS_BATCH)]) for i, geometry in enumerate(GEOMETRY_GRID)]


# Small cases (batch <= 2, few channels), each a feature on its own and together.
GRADCHECK_CASES = {
    "dilated": ((2, 2, 7, 6), (3, 2, 3, 3), {"dilation": 2, "padding": 1}),
    "dilated-strided-uneven": ((1, 2, 9, 8), (2, 2, 2, 3), {"dilation": (2, 3), "stride": (2, 1), "padding": (1, 2)}),
    "grouped": ((2, 4, 5, 5), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    "depthwise": ((2, 3, 5, 6), (3, 1, 3, 3), {"groups": 3, "stride": 2}),
    "same-even-kernel": ((2, 2, 5, 6), (3, 2, 2, 4), {"padding": "same"}),
    "same-dilated": ((1, 2, 6, 5), (2, 2, 3, 2), {"padding": "same", "dilation": 2}),
    "valid": ((2, 2, 5, 5), (2, 2, 3, 3), {"padding": "valid", "stride": 2}),
    "everything": ((2, 4, 8, 7), (4, 2, 2, 3), {"groups": 2, "dilation": (2, 1), "padding": "same"}),
}

TOLERANCE = {torch.float64: {}, torch.float32: derivations.TOLERANCE}  # float64: assert_close's tight default


def conv2d_opinfo():
    """PyTorch's OpInfo of nn.functional.conv2d, as `convexp gradcheck` takes it; skips without its test packages."""
    pytest.importorskip("expecttest", reason="PyTorch's OpInfo samples need the test package expecttest (make setup installs it)")
    pytest.importorskip("hypothesis", reason="PyTorch's OpInfo samples need the test package hypothesis (make setup installs it)")
    return derivations.conv2d_opinfo()


run_sample = derivations.run_opinfo_sample  # one OpInfo sample through a layout against F.conv2d

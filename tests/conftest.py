"""Shared fixtures: small tensors, the real-data root, and a way to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# CPU threads of every torch process in the suite: the test process, and the CLI subprocesses
# (through OMP_NUM_THREADS, torch's default), whatever the machine's core count. Runs compared
# byte for byte across processes must use the same count: it changes sums in the last bits.
# `make test` runs tests in parallel processes (pytest-xdist), one thread each: several
# processes of two threads on two cores wait on each other's threads and run up to 10x slower.
TEST_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)


def pytest_configure(config):
    """In each process that runs tests, before any test module or module fixture: the threads
    above, and freed tensor memory reused rather than faulted in again, as in every convexp
    process (cli.main and the executor's workers do the same), so tests that train through the
    library run at the CLI's speed. The memory tests measure fresh processes of their own.

    Not in xdist's controller, which only hands tests out: importing torch there delayed
    starting the test processes by 2.5 s."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import torch

    from convexp.memory import keep_freed_memory

    torch.set_num_threads(TEST_THREADS)
    keep_freed_memory()


def pytest_collection_modifyitems(items):
    """Slow tests first, modules with the longest (`slow(seconds=N)`, else about 10 s) first: run
    in parallel (make test), the last minute is then short tests on every process, not one long
    test on one process while the others are idle. A module's slow tests stay together, in file
    order, so a module fixture they share is set up once."""
    def cost(item) -> float:
        slow = item.get_closest_marker("slow")
        return slow.kwargs.get("seconds", 10) if slow is not None else 0

    longest = {}
    for item in items:
        longest[item.module] = max(longest.get(item.module, 0), cost(item))
    items.sort(key=lambda item: (cost(item) == 0, -longest[item.module]))


@pytest.fixture(autouse=True)
def torch_threads():
    import torch

    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True, scope="session")
def image_cache_of_this_session(tmp_path_factory):
    """Decoded image folders go to a cache of this test session (the CLI runs inherit it), not
    the user's ~/.cache: tests never read a cache they did not write."""
    os.environ["CONVEXP_CACHE"] = str(tmp_path_factory.mktemp("image-cache"))


def data_dir() -> Path | None:
    value = os.environ.get("CONVEXP_DATA")
    return Path(value) if value else None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """../shared/data/mnist-mini, found through CONVEXP_DATA (set by .ci/run)."""
    root = data_dir()
    if root is None:
        pytest.skip("real-data test: set CONVEXP_DATA to the folder holding mnist-mini (e.g. ../shared/data)")
    mini = root / "mnist-mini"
    if not (mini / "MNIST" / "raw").is_dir():
        pytest.skip(f"real-data test: {mini}/MNIST/raw not found under CONVEXP_DATA")
    return mini


def mini(root: Path) -> list[str]:
    """CLI options for mnist-mini: its root, and a validation fifth (the configs' 10,000 is the full set's)."""
    return ["--set", f"data.root={root}", "--set", "data.val_split=0.2"]


# For runs that test plumbing (resume, the executors, the generic sweep), not accuracy: each
# evaluation measures 500 images (2 batches of 250 per split) instead of the whole split. Their
# assertions compare runs with each other; evaluating whole splits is tested by the accuracy floors.
SMOKE_EVAL = ["--set", "train.eval_batch_size=250", "--set", "train.max_eval_batches=2"]


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
    import contextlib
    import io

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


def write_pngs(root, sizes_per_digit, corrupt=None):
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

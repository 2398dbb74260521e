"""pytest's hooks and the fixtures every module may ask for: threads, a seeded generator, the image
cache of this session, the real data. Helpers to import live in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# CPU threads of every torch process in the suite: the test process, and the CLI subprocesses
# (through OMP_NUM_THREADS, torch's default), whatever the machine's core count. Runs compared
# byte for byte across processes must use the same count: it changes sums in the last bits.
# `make test` runs tests in parallel processes (pytest-xdist), one thread each: several
# processes of two threads on two cores wait on each other's threads and run up to 10x slower.
TEST_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)


def pytest_configure(config):
    """In each process that runs tests, before any test module or module fixture: the threads
    above, freed tensor memory reused rather than faulted in again, and denormals flushed to zero
    before any tensor operation starts torch's threads, as in every convexp process (cli.main
    and the executor's workers do the same), so tests that train through the library run as the
    CLI does. The memory and denormal tests measure fresh processes of their own.

    Not in xdist's controller, which only hands tests out: importing torch there delayed
    starting the test processes by 2.5 s."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import torch

    from convexp.memory import keep_freed_memory
    from convexp.precision import flush_denormals

    flush_denormals()
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
def torch_threads_and_seed():
    """Every test starts with the suite's threads and torch's generator seeded: random inputs are
    the same at every run, so a failure repeats."""
    import torch

    torch.set_num_threads(TEST_THREADS)
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def image_cache_of_this_session(tmp_path_factory):
    """Decoded image folders go to a cache of this test session (the CLI runs inherit it), not
    the user's ~/.cache: tests never read a cache they did not write."""
    os.environ["CONVEXP_CACHE"] = str(tmp_path_factory.mktemp("image-cache"))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """../shared/data/mnist-mini, found through CONVEXP_DATA (set by .ci/run)."""
    from tests.helpers import (  # here: xdist's controller, which only hands tests out, never imports torch
        NO_DATA,
        data_dir,
    )

    root = data_dir()
    if root is None:
        pytest.skip(NO_DATA)
    mini = root / "mnist-mini"
    if not (mini / "MNIST" / "raw").is_dir():
        pytest.skip(f"real-data test: {mini}/MNIST/raw not found under CONVEXP_DATA")
    return mini


@pytest.fixture(scope="session")
def course_varres(tmp_path_factory) -> Path:
    """A few hundred of the course's own mnist-varres PNGs (30 a digit to train, 10 to test), in
    its layout: the real images through the real loader, at a fraction of the set's 40 s decode."""
    from tests.helpers import NO_DATA, course_varres_subset, data_dir

    root = data_dir()
    if root is None:
        pytest.skip(NO_DATA)
    if not (root / "mnist-varres" / "train").is_dir():
        pytest.skip(f"real-data test: {root}/mnist-varres/train not found under CONVEXP_DATA")
    return course_varres_subset(tmp_path_factory.mktemp("course") / "mnist-varres", {"train": 30, "test": 10})

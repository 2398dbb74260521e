"""keep_freed_memory: freed tensor memory is reused without page faults (glibc Linux only)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow(seconds=20)  # three Python processes of about 6 s: early in make test, not its tail

# Forward passes of MNISTConvNet on 720 digits (conv1's output alone is 36 MB, above the 32 MiB
# that glibc's mmap threshold can rise to); print the minor page faults of ten passes after
# three warm-up ones. Kept memory does not mean zero faults: depending on the CPU's kernels
# (oneDNN's ISA changes the scratch blocks), the heap can fragment and grow by a block now and
# then, even after warm-up.
FAULTS_SCRIPT = """
import resource, sys
from convexp.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
import torch
from convexp.models import MNISTConvNet
torch.set_num_threads(1)
model, images = MNISTConvNet("native").eval(), torch.rand(DIGITS, 1, 28, 28)
with torch.inference_mode():
    for _ in range(3):
        model(images)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(PASSES):
        model(images)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
DIGITS = 720
MEASURED_PASSES = 10
FAULTS_SCRIPT = FAULTS_SCRIPT.replace("DIGITS", str(DIGITS)).replace("PASSES", str(MEASURED_PASSES))
PAGES_OF_CONV1_OUTPUT = DIGITS * 16 * 28 * 28 * 4 // 4096
assert PAGES_OF_CONV1_OUTPUT * 4096 > 32 * 2**20  # always above the mmap threshold's ceiling


def faults(mode: str, env_value: str = "1") -> tuple[bool, int]:
    env = {**os.environ, "CONVEXP_KEEP_FREED_MEMORY": env_value}
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's; other C libraries keep their own policy")


@pytest.fixture(scope="module")
def default_faults() -> int:
    kept, count = faults("default")
    assert not kept
    return count


@pytest.mark.xdist_group("default-faults")  # both read one measurement
@glibc_only
def test_default_malloc_faults_big_blocks_in_again(default_faults):
    # The problem being solved: each pass faults its big activations in again, page by page.
    assert default_faults > MEASURED_PASSES * PAGES_OF_CONV1_OUTPUT


@pytest.mark.xdist_group("default-faults")  # both read one measurement
@glibc_only
def test_kept_memory_is_reused_without_faults(default_faults):
    kept, count = faults("keep")
    assert kept
    # Every activation every pass (about 370,000 faults), against an occasional heap growth (0 to
    # one 36 MB block, 8,800 pages, whatever the CPU): the kept count is 40x smaller or more.
    assert count < default_faults // 5, (count, default_faults)


@glibc_only
def test_environment_variable_turns_it_off():
    kept, count = faults("keep", env_value="0")
    assert not kept
    assert count > MEASURED_PASSES * PAGES_OF_CONV1_OUTPUT

"""Interrupt a real run after its first epoch, resume it, and get the straight run's numbers.

The interrupted runs are processes of their own (a signal needs one), forked from a server that
has already imported torch; resuming, and the straight runs they are compared with, go through
the CLI in this process. Either way skips starting Python and importing torch again (5 s a run);
tests/test_cli.py and the executor's Ctrl-C test run `python -m convexp` itself."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import (
    SMOKE_EVAL,
    CliProcess,
    assert_same_files,
    interrupted_then_resumed,
    invoke,
    mini,
    only_run,
    sigint_at_batch,
)

pytestmark = pytest.mark.slow


def wait_for_epochs(metrics, epochs: int, process: CliProcess, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 1 + epochs:
            return
        assert process.poll() is None, process.output()
        time.sleep(0.05)
    raise AssertionError("the run did not finish its first epoch in time")


def start_and_wait_for_first_epoch(command: list[str], out: Path, metrics_relative: str):
    out.mkdir(parents=True, exist_ok=True)
    process = CliProcess(*command, "--out", str(out), "-q", log=out.parent / f"{out.name}.log")
    deadline = time.time() + 120
    while not any(out.iterdir()) and time.time() < deadline:
        assert process.poll() is None, process.output()
        time.sleep(0.05)
    (run,) = out.iterdir()
    wait_for_epochs(run / metrics_relative, 1, process)
    return process, run


def interrupt_after_first_epoch(command: list[str], out: Path, metrics_relative: str, sig=signal.SIGINT):
    process, run = start_and_wait_for_first_epoch(command, out, metrics_relative)
    process.send_signal(sig)
    code = process.wait()
    return run, code, process.output()


# 3 epochs of 40 batches: the signal after the first lands with two epochs to go, on a busy machine too
TRAIN = ["--set", "train.epochs=3", "--set", "train.batch_size=64", "--set", "train.max_batches=40", *SMOKE_EVAL]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, mnist_root):
    """The run the interrupted ones must equal once resumed: trained once for both signals."""
    out = tmp_path_factory.mktemp("straight")
    straight = invoke("train-mnist", *mini(mnist_root), *TRAIN, "--out", str(out), "-q")
    assert straight.returncode == 0, straight.stderr
    (run,) = out.iterdir()
    return run


@pytest.mark.xdist_group("straight-run")  # both read one straight run
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume_equals_a_straight_run(tmp_path, mnist_root, straight_run, sig):
    command = ["train-mnist", *mini(mnist_root), *TRAIN]
    run, code, stderr = interrupt_after_first_epoch(command, tmp_path / "a", "metrics.csv", sig)
    assert code == 130, stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert (run / "checkpoint.pt").is_file() and not (run / "model.pt").exists()
    assert "convexp resume" in (run / "log.txt").read_text()

    resumed = invoke("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"

    for name in ("metrics.csv", "batches.csv"):
        assert (run / name).read_bytes() == (straight_run / name).read_bytes(), name
    assert len((run / "metrics.csv").read_text().splitlines()) == 4


def test_interrupted_sweep_resumes_only_what_is_left(tmp_path, mnist_root):
    command = ["sweep-batch", *mini(mnist_root), *SMOKE_EVAL, "--set", "train.epochs=3", "--set", "train.max_batches=4",
               "--set", "sweep.batch_sizes=[256, 512]", "--set", "sweep.seeds=[0]"]
    run, code, _ = interrupt_after_first_epoch(command, tmp_path / "runs", "bs512-seed0/metrics.csv")
    assert code == 130
    assert json.loads((run / "bs256-seed0" / "summary.json").read_text())["status"] == "completed"
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    first_child = (run / "bs256-seed0" / "metrics.csv").read_bytes()
    resumed = invoke("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "bs256-seed0" / "metrics.csv").read_bytes() == first_child  # not trained again
    assert "[bs512-seed0] resuming after epoch 1" in resumed.stdout
    assert (run / "summary.csv").read_text().count("completed") == 2


def test_same_seed_same_cli_metrics_byte_for_byte(tmp_path, mnist_root):
    """Two processes: a fresh one, and this one with its own history of seeds and threads."""
    args = ["augment", *mini(mnist_root), *SMOKE_EVAL, "--set", "train.epochs=1", "--set", "train.batch_size=128",
            "--set", "train.max_batches=15", "-q"]
    fresh = CliProcess(*args, "--out", str(tmp_path / "a"), log=tmp_path / "a.log")
    assert fresh.wait() == 0, fresh.output()
    assert invoke(*args, "--out", str(tmp_path / "b")).returncode == 0
    (a,), (b,) = (tmp_path / "a").iterdir(), (tmp_path / "b").iterdir()
    for name in ("metrics.csv", "batches.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert len((a / "batches.csv").read_text().splitlines()) == 1 + 15


def test_a_killed_run_is_shown_dead_and_resume_takes_it_while_a_live_one_is_locked(tmp_path, mnist_root):
    command = ["train-mnist", *mini(mnist_root), *SMOKE_EVAL, "--set", "train.epochs=4", "--set", "train.batch_size=128",
               "--set", "train.max_batches=15"]  # 3 short epochs still to go when it is killed
    process, run = start_and_wait_for_first_epoch(command, tmp_path / "runs", "metrics.csv")
    second = invoke("resume", str(run))  # the first owner is alive: one process per folder
    assert second.returncode == 2 and "is being run now by another convexp" in second.stderr
    process.kill()  # SIGKILL: no handler runs, summary.json still says running
    process.wait()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    listing = invoke("runs", "--out", str(tmp_path / "runs"))
    assert "dead (killed while running" in listing.stdout
    resumed = invoke("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path, mnist_root):
    # 4 short epochs: the signal after the first must land before the run ends, on a busy machine too
    command = ["train-mnist", *mini(mnist_root), *SMOKE_EVAL, "--set", "train.epochs=4", "--set", "train.batch_size=256",
               "--set", "train.max_batches=10"]
    run, code, _ = interrupt_after_first_epoch(command, tmp_path / "runs", "metrics.csv")
    assert code == 130
    (run / "checkpoint.pt").unlink()
    resumed = invoke("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "no checkpoint.pt" in resumed.stdout and "training again from epoch 1" in resumed.stdout


# -- every kind of run, stopped mid-epoch at a chosen batch, resumes to the straight run's bytes ----
# Each kind below keeps state that a resume must restore or recompute exactly: the augmentation
# generator's stream (augment, varres-pool with augment), the order of resolution buckets
# (varres-pool), the learning rate as a function of the global step (cosine with warm-up). The
# Ctrl-C lands mid-epoch, so the resumed run must also drop the partial epoch and redo it.

SHORT = ["--set", "train.epochs=3", *SMOKE_EVAL]


def kind_args(kind: str, mnist_root: Path, course_varres: Path) -> tuple[list[str], int]:
    """(the command, the batch after which Ctrl-C comes: inside epoch 2)"""
    if kind == "cosine-warmup":  # warm-up ends inside epoch 1, the cosine runs over the rest
        return ["train-mnist", *mini(mnist_root), *SHORT, "--set", "train.max_batches=12", "--set", "train.batch_size=64",
                "--set", "train.schedule=cosine", "--set", "train.warmup_epochs=0.5"], 18
    if kind == "augment":
        return ["augment", *mini(mnist_root), *SHORT, "--set", "train.max_batches=10", "--set", "train.batch_size=64"], 15
    # configs/varres-best.yaml on the course's own images (30 a digit): three resolution buckets
    # interleaved, each image augmented at its own size, batch norm, AdamW, cosine after warm-up
    return ["varres-pool", "--config", "configs/varres-best.yaml", "--set", f"data.root={course_varres}", *SHORT,
            "--set", "seeds=[0]", "--set", "train.batch_size=32", "--set", "train.warmup_epochs=0.5",
            "--set", "train.eval_batch_size=100"], 13


@pytest.mark.parametrize("kind", ["cosine-warmup", "augment", "varres-pool"])
def test_ctrl_c_mid_epoch_then_resume_equals_the_straight_run_byte_for_byte(tmp_path, mnist_root, course_varres, kind):
    args, batch = kind_args(kind, mnist_root, course_varres)
    straight = invoke(*args, "--out", str(tmp_path / "straight"), "-q")
    assert straight.returncode == 0, straight.stderr
    resumed = interrupted_then_resumed(args, tmp_path / "resumed", batch)
    straight_run = only_run(tmp_path / "straight")
    assert_same_files(resumed, straight_run)
    assert "resuming after epoch 1 of 3" in "".join(p.read_text() for p in resumed.rglob("log.txt"))  # stopped in epoch 2
    assert all(len(p.read_text().splitlines()) == 1 + 3 for p in resumed.rglob("metrics.csv"))  # every epoch, none twice


# -- checkpoints that cannot be used: the run stays resumable, and the line says how to go on ------

# 2 epochs of 5 batches: Ctrl-C at batch 7 leaves epoch 1's checkpoint
FEW_BATCHES = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "train.max_batches=5", *SMOKE_EVAL]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def without_history_rows(path: Path) -> None:
    import torch

    state = torch.load(path, weights_only=True)
    del state["history"]["rows"]
    torch.save(state, path)


def without_optimizer(path: Path) -> None:
    import torch

    state = torch.load(path, weights_only=True)
    del state["optimizer"]
    torch.save(state, path)


def replaced_by_a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("damage,what", [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (replaced_by_a_folder, "is not a file"),
    (truncate, "is truncated or not a checkpoint"),
    (without_optimizer, "is incomplete (no optimizer)"),
    (without_history_rows, "is incomplete (no history.rows)"),
], ids=["empty", "a-folder", "truncated", "no-optimizer", "no-history-rows"])
def test_an_unusable_checkpoint_leaves_the_run_interrupted(tmp_path, mnist_root, damage, what):
    with sigint_at_batch(7):  # in epoch 2: epoch 1's checkpoint is on disk
        stopped = invoke("train-mnist", *mini(mnist_root), *FEW_BATCHES, "--out", str(tmp_path), "-q")
    assert stopped.returncode == 130, stopped.stderr
    run = only_run(tmp_path)
    checkpoint = run / "checkpoint.pt"
    damage(checkpoint)
    before = (run / "summary.json").read_text()
    resumed = invoke("resume", str(run), "-q")
    assert resumed.returncode == 2, resumed.stdout[-2000:] + resumed.stderr
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in resumed.stderr, resumed.stderr
    assert f"checkpoint {checkpoint} {what}" in lines[0]
    assert f"mv {checkpoint} {checkpoint}.bad" in lines[0] and f"convexp resume {run}" in lines[0]
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert (run / "summary.json").read_text() == before  # no trace of the failed attempt
    # Going on as the line says: the run trains again from epoch 1 and completes.
    checkpoint.rename(f"{checkpoint}.bad")
    again = invoke("resume", str(run), "-q")
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("jobs", [[], ["--jobs", "2", "--threads", "1"]], ids=["here", "in-a-worker"])
def test_a_study_childs_unusable_checkpoint_leaves_the_study_interrupted(tmp_path, course_varres, jobs):
    args = ["varres-pool", "--set", f"data.root={course_varres}", "--set", "model.pooling=[max]", *FEW_BATCHES]
    with sigint_at_batch(7):
        stopped = invoke(*args, "--out", str(tmp_path), "-q")
    assert stopped.returncode == 130, stopped.stderr
    study = only_run(tmp_path)
    (child,) = [p for p in study.iterdir() if (p / "checkpoint.pt").is_file()]
    (child / "checkpoint.pt").write_bytes(b"")
    resumed = invoke("resume", str(study), "-q", *jobs)
    assert resumed.returncode == 2, resumed.stdout[-2000:] + resumed.stderr
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 1 and f"checkpoint {child / 'checkpoint.pt'} is empty" in lines[0], resumed.stderr
    assert f"convexp resume {study}" in lines[0]
    for folder in (study, child):
        assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"

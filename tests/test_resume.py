"""Interrupt a real run after its first epoch, resume it, and get the straight run's numbers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, mini, run_cli

pytestmark = pytest.mark.slow


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "convexp", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_epochs(metrics, epochs: int, process, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 1 + epochs:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not finish its first epoch in time")


def interrupt_after_first_epoch(command: list[str], out, metrics_relative: str, sig=signal.SIGINT):
    process = start_cli(*command, "--out", str(out), "-q")
    deadline = time.time() + 120
    while not (out.is_dir() and any(out.iterdir())) and time.time() < deadline:
        time.sleep(0.05)
    (run,) = out.iterdir()
    wait_for_epochs(run / metrics_relative, 1, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return run, process.returncode, stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume_equals_a_straight_run(tmp_path, mnist_root, sig):
    command = ["train-mnist", *mini(mnist_root), "--set", "train.epochs=3", "--set", "train.batch_size=64"]
    run, code, stderr = interrupt_after_first_epoch(command, tmp_path / "a", "metrics.csv", sig)
    assert code == 130, stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert (run / "checkpoint.pt").is_file() and not (run / "model.pt").exists()
    assert "convexp resume" in (run / "log.txt").read_text()

    resumed = run_cli("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"

    straight = run_cli(*command, "--out", str(tmp_path / "b"), "-q")
    assert straight.returncode == 0, straight.stderr
    (straight_run,) = (tmp_path / "b").iterdir()
    for name in ("metrics.csv", "batches.csv"):
        assert (run / name).read_bytes() == (straight_run / name).read_bytes(), name
    assert len((run / "metrics.csv").read_text().splitlines()) == 4


def test_interrupted_sweep_resumes_only_what_is_left(tmp_path, mnist_root):
    command = ["sweep-batch", *mini(mnist_root), "--set", "train.epochs=2",
               "--set", "sweep.batch_sizes=[256, 512]", "--set", "sweep.seeds=[0]"]
    run, code, _ = interrupt_after_first_epoch(command, tmp_path, "bs512-seed0/metrics.csv")
    assert code == 130
    assert json.loads((run / "bs256-seed0" / "summary.json").read_text())["status"] == "completed"
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    first_child = (run / "bs256-seed0" / "metrics.csv").read_bytes()
    resumed = run_cli("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "bs256-seed0" / "metrics.csv").read_bytes() == first_child  # not trained again
    assert "[bs512-seed0] resuming after epoch 1" in resumed.stdout
    assert (run / "summary.csv").read_text().count("completed") == 2


def test_same_seed_same_cli_metrics_byte_for_byte(tmp_path, mnist_root):
    args = ["augment", *mini(mnist_root), "--set", "train.epochs=1", "--set", "train.batch_size=128", "-q"]
    for out in ("a", "b"):
        assert run_cli(*args, "--out", str(tmp_path / out)).returncode == 0
    (a,), (b,) = (tmp_path / "a").iterdir(), (tmp_path / "b").iterdir()
    for name in ("metrics.csv", "batches.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_a_killed_run_is_shown_dead_and_resume_takes_it_while_a_live_one_is_locked(tmp_path, mnist_root):
    command = ["train-mnist", *mini(mnist_root), "--set", "train.epochs=3", "--set", "train.batch_size=128"]
    process = start_cli(*command, "--out", str(tmp_path), "-q")
    deadline = time.time() + 120
    while not any(tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.05)
    (run,) = tmp_path.iterdir()
    wait_for_epochs(run / "metrics.csv", 1, process)
    second = run_cli("resume", str(run))  # the first owner is alive: one process per folder
    assert second.returncode == 2 and "is being run now by another convexp" in second.stderr
    process.kill()  # SIGKILL: no handler runs, summary.json still says running
    process.wait()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    listing = run_cli("runs", "--out", str(tmp_path))
    assert "dead (killed while running" in listing.stdout
    resumed = run_cli("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path, mnist_root):
    # 4 short epochs: the signal after the first must land before the run ends, on a busy machine too
    command = ["train-mnist", *mini(mnist_root), "--set", "train.epochs=4", "--set", "train.batch_size=256"]
    run, code, _ = interrupt_after_first_epoch(command, tmp_path, "metrics.csv")
    assert code == 130
    (run / "checkpoint.pt").unlink()
    resumed = run_cli("resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert "no checkpoint.pt" in resumed.stdout and "training again from epoch 1" in resumed.stdout

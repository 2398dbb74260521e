"""Studies in parallel (--jobs): the same numbers as one after another, dead workers, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from convexp.config import TrainMnistConfig
from convexp.console import Reporter
from convexp.executor import ChildTask, Execution, run_children
from convexp.lifecycle import open_run
from convexp.runs import RunFolder
from tests.conftest import REPO, invoke, mini, run_cli


# -- task functions a worker imports by name ------------------------------------------------------


def complete(folder: Path, reporter: Reporter) -> None:
    run = RunFolder(folder)
    run.path.mkdir(exist_ok=True)
    with open_run(run, "train-mnist", TrainMnistConfig(), torch.device("cpu"), reporter, name=run.path.name):
        run.write_text("threads.txt", str(torch.get_num_threads()))


def die_while_running(folder: Path, reporter: Reporter) -> None:
    """Starts its run, then is killed as the kernel's OOM killer would (SIGKILL)."""
    run = RunFolder(folder)
    run.path.mkdir(exist_ok=True)
    with open_run(run, "train-mnist", TrainMnistConfig(), torch.device("cpu"), reporter, name=run.path.name):
        os.kill(os.getpid(), signal.SIGKILL)


def tasks_of(tmp_path, functions) -> list[ChildTask]:
    return [ChildTask(f"c{i}", tmp_path / f"c{i}", f, {"folder": tmp_path / f"c{i}"}) for i, f in enumerate(functions)]


def test_a_dead_worker_leaves_its_child_failed_and_the_others_go_on(tmp_path):
    tasks = tasks_of(tmp_path, [complete, die_while_running, complete])
    seconds = run_children(tasks, Execution(jobs=2, threads=1), Reporter(quiet=True))
    assert set(seconds) == {"c0", "c1", "c2"}
    assert RunFolder(tmp_path / "c0").status == RunFolder(tmp_path / "c2").status == "completed"
    dead = RunFolder(tmp_path / "c1").read_summary()
    assert dead["status"] == "failed"
    assert "died of SIGKILL (killed, or out of memory)" in dead["error"] and "convexp resume" in dead["error"]
    assert (tmp_path / "c0" / "threads.txt").read_text() == "1"  # --threads reached the worker


def test_sequential_children_use_the_threads_asked_for_and_restore_them(tmp_path):
    before = torch.get_num_threads()
    run_children(tasks_of(tmp_path, [complete]), Execution(jobs=1, threads=1), Reporter(quiet=True))
    assert (tmp_path / "c0" / "threads.txt").read_text() == "1"
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("jobs,message", [("0", "--jobs '0' must be a whole number of at least 1, or auto"),
                                          ("two", "--jobs 'two' must be a whole number of at least 1, or auto")])
def test_bad_jobs_is_one_line(jobs, message):
    result = invoke("sweep-batch", "--jobs", jobs)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


# -- the real thing, on mnist-mini ---------------------------------------------------------------


SWEEP = ["--set", "train.epochs=1", "--set", "train.max_batches=40", "--set", "sweep.batch_sizes=[16, 32]",
         "--set", "sweep.seeds=[0]"]


@pytest.mark.slow
def test_jobs_2_gives_byte_identical_children_to_a_sequential_sweep(tmp_path, mnist_root):
    for jobs in ("1", "2"):
        result = run_cli("sweep-batch", *mini(mnist_root), *SWEEP, "--jobs", jobs, "--threads", "1",
                         "--out", str(tmp_path / f"jobs{jobs}"), "-q")
        assert result.returncode == 0, result.stderr
    (sequential,), (parallel,) = (list((tmp_path / f"jobs{j}").iterdir()) for j in ("1", "2"))
    for child in ("bs16-seed0", "bs32-seed0"):
        for name in ("metrics.csv", "batches.csv"):
            assert (sequential / child / name).read_bytes() == (parallel / child / name).read_bytes(), f"{child}/{name}"
    assert json.loads((parallel / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_the_study_resumes(tmp_path, mnist_root):
    out = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "convexp", "sweep-batch", *mini(mnist_root), "--set", "train.epochs=3",
                                "--set", "train.max_batches=150", "--set", "sweep.batch_sizes=[16, 32]", "--set", "sweep.seeds=[0]", "--jobs", "2",
                                "--threads", "1", "--out", str(out), "-q"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:  # both children have finished an epoch
        metrics = list(out.glob("*/bs*/metrics.csv"))
        if len(metrics) == 2 and all(len(m.read_text().splitlines()) >= 2 for m in metrics):
            break
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
    process.communicate(timeout=120)
    assert process.returncode == 130
    (study,) = out.iterdir()
    children = [RunFolder(study / c).read_summary() for c in ("bs16-seed0", "bs32-seed0")]
    assert RunFolder(study).status == "interrupted"
    assert all(c["status"] == "interrupted" for c in children)
    for child in children:  # no worker left behind
        with pytest.raises(ProcessLookupError):
            os.kill(child["owner"]["pid"], 0)
    result = run_cli("resume", str(study), "--jobs", "2", "--threads", "1", "-q")
    assert result.returncode == 0, result.stderr
    assert all(RunFolder(study / c).status == "completed" for c in ("bs16-seed0", "bs32-seed0"))
    assert len((study / "bs16-seed0" / "metrics.csv").read_text().splitlines()) == 1 + 3

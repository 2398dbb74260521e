"""Studies in parallel (--jobs): the same numbers as one after another, dead workers, Ctrl-C."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from convexp.console import Reporter
from convexp.errors import ConvexpError, DiskFull, UnusableCheckpoint
from convexp.execution import ChildTask, Execution, run_children
from convexp.experiments.train_mnist import TrainMnistConfig
from convexp.lifecycle import open_run
from convexp.runs import RunFolder
from tests.helpers import REPO, SMOKE_EVAL, assert_same_files, invoke, mini, only_run

# -- task functions a worker imports by name ------------------------------------------------------


def complete(parent: Path, name: str, reporter: Reporter) -> None:
    run = RunFolder(parent / name)
    run.path.mkdir(exist_ok=True)
    with open_run(run, "train-mnist", TrainMnistConfig(), torch.device("cpu"), reporter, name=run.path.name):
        run.write_text("threads.txt", str(torch.get_num_threads()))


def die_while_running(parent: Path, name: str, reporter: Reporter) -> None:
    """Starts its run, then is killed as the kernel's OOM killer would (SIGKILL)."""
    run = RunFolder(parent / name)
    run.path.mkdir(exist_ok=True)
    with open_run(run, "train-mnist", TrainMnistConfig(), torch.device("cpu"), reporter, name=run.path.name):
        os.kill(os.getpid(), signal.SIGKILL)


def die_before_starting(parent: Path, name: str, reporter: Reporter) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # e.g. out of memory while moving the data to the device


def terminated_before_starting(parent: Path, name: str, reporter: Reporter) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # not reached: SIGTERM's default ends the worker


def wait_for(condition, seconds: float, what: str) -> None:
    """Poll `condition` every 50 ms; fail with `what` if it is still false after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


def running_in(folder: Path) -> bool:
    """The child in `folder` has opened its run (its summary says running, with its owner)."""
    return (folder / "summary.json").is_file() and RunFolder(folder).status == "running"


def train_until_stopped(parent: Path, name: str, reporter: Reporter, hold: Path | None = None) -> None:
    """Opens its run and trains (sleeps) until a signal stops it, or until `hold` is gone; at most 60 s,
    so a worker the test fails to stop still ends. With `hold`, its pid goes beside it: on Ray the
    child trains in a scratch folder, so its folder here shows nothing until it ends."""
    if hold is not None:
        (hold.parent / f"{name}.pid").write_text(str(os.getpid()))
    run = RunFolder(parent / name)
    run.path.mkdir(exist_ok=True)
    with open_run(run, "train-mnist", TrainMnistConfig(), torch.device("cpu"), reporter, name=run.path.name):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (hold is None or hold.exists()):
            time.sleep(0.05)


def disk_full_once_sibling_runs(parent: Path, name: str, reporter: Reporter, sibling: Path) -> None:
    """Fills the disk (as open_run reports ENOSPC) while the worker beside it trains."""
    wait_for(lambda: running_in(sibling), 30, f"{sibling} running")
    run = RunFolder(parent / name)
    run.path.mkdir(exist_ok=True)
    with open_run(run, "train-mnist", TrainMnistConfig(), torch.device("cpu"), reporter, name=run.path.name):
        raise DiskFull(f"the disk is full ({run.path}): test")


def unusable_checkpoint(parent: Path, name: str, reporter: Reporter) -> None:
    """As train.read_checkpoint says it, naming the child's folder wherever it trains."""
    path = Path(parent) / name / "checkpoint.pt"
    raise UnusableCheckpoint(f"checkpoint {path} is empty (0 bytes): move it aside (mv {path} {path}.bad), "
                             f"then `convexp resume {parent}`")


def stopped_by_an_unusable_checkpoint(tmp_path: Path, execution: Execution) -> None:
    """The study raises the child's own message, naming the study's folder here (not a Ray
    worker's scratch copy); the child stays interrupted, resumable once the file is moved aside."""
    RunFolder(tmp_path / "c1").path.mkdir()
    RunFolder(tmp_path / "c1").write_json("summary.json", {"status": "interrupted"})
    tasks = tasks_of(tmp_path, [complete, unusable_checkpoint])
    checkpoint = tmp_path / "c1" / "checkpoint.pt"
    with pytest.raises(UnusableCheckpoint) as raised:
        run_children(tasks, execution, Reporter(quiet=True))
    assert str(raised.value) == (f"checkpoint {checkpoint} is empty (0 bytes): move it aside (mv {checkpoint} "
                                 f"{checkpoint}.bad), then `convexp resume {tmp_path}`")
    assert RunFolder(tmp_path / "c1").status == "interrupted"


def test_an_unusable_checkpoint_in_a_worker_stops_the_study_with_its_message(tmp_path):
    stopped_by_an_unusable_checkpoint(tmp_path, Execution(jobs=2, threads=1))


def complete_once_sibling_runs(parent: Path, name: str, reporter: Reporter, sibling: Path) -> None:
    wait_for(lambda: running_in(sibling), 30, f"{sibling} running")
    complete(parent, name, reporter)


def tasks_of(tmp_path, functions) -> list[ChildTask]:
    return [ChildTask(f"c{i}", tmp_path / f"c{i}", f, {"parent": tmp_path, "name": f"c{i}"}) for i, f in enumerate(functions)]


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan's zombie waits for a PID 1 that may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def log_of(folder: Path) -> str:
    return (folder / "log.txt").read_text() if (folder / "log.txt").is_file() else ""


def owner_pid(folder: Path) -> int:
    return RunFolder(folder).read_summary()["owner"]["pid"]


def test_a_full_disk_in_a_worker_stops_the_study(tmp_path):
    """DiskFull in a worker (exit STOP_STUDY_EXIT): the study raises it, children still waiting never
    start, and the sibling that was training is stopped, saved as interrupted by its worker."""
    tasks = [ChildTask("c0", tmp_path / "c0", train_until_stopped, {"parent": tmp_path, "name": "c0"}, work=4),
             ChildTask("c1", tmp_path / "c1", disk_full_once_sibling_runs,
                       {"parent": tmp_path, "name": "c1", "sibling": tmp_path / "c0"}, work=3),
             *[ChildTask(f"c{i}", tmp_path / f"c{i}", complete, {"parent": tmp_path, "name": f"c{i}"}, work=4 - i)
               for i in (2, 3)]]
    started = time.monotonic()
    with pytest.raises(DiskFull, match=r"the disk is full \(.*c1\): test"):  # the worker's own, sent back
        run_children(tasks, Execution(jobs=2, threads=1), Reporter(quiet=True))
    assert time.monotonic() - started < 30, "the sibling was not stopped: it trained on to its end"
    full = RunFolder(tmp_path / "c1").read_summary()
    assert full["status"] == "failed" and "the disk is full" in full["error"]
    assert RunFolder(tmp_path / "c0").status == "interrupted"
    assert "interrupted: continue with" in log_of(tmp_path / "c0"), "c0's worker did not save it on a SIGTERM"
    assert not (tmp_path / "c2").exists() and not (tmp_path / "c3").exists()  # never started
    assert not any(alive(owner_pid(tmp_path / c)) for c in ("c0", "c1")), "a worker outlived the full disk"


@pytest.mark.parametrize("hook", ["on_start", "on_end"])
def test_an_error_in_the_driver_stops_every_worker(tmp_path, hook):
    """A hook (run in the study's process) that raises: the error goes on up, and every running
    worker is stopped first, each saving its child as interrupted; none is left alive."""
    tasks = [ChildTask("c0", tmp_path / "c0", train_until_stopped, {"parent": tmp_path, "name": "c0"}, work=3),
             ChildTask("c1", tmp_path / "c1", complete_once_sibling_runs,
                       {"parent": tmp_path, "name": "c1", "sibling": tmp_path / "c0"}, work=2),
             ChildTask("c2", tmp_path / "c2", train_until_stopped, {"parent": tmp_path, "name": "c2"}, work=1)]
    failing = "c2" if hook == "on_start" else "c1"  # c2 starts once c1 has ended; c0 trains throughout

    def broken_hook(task, *seconds):
        if task.name == failing:
            raise RuntimeError(f"{hook} broke")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=f"{hook} broke"):
        run_children(tasks, Execution(jobs=2, threads=1), Reporter(quiet=True), **{hook: broken_hook})
    assert time.monotonic() - started < 30, "c0 was not stopped: it trained on to its end"
    assert RunFolder(tmp_path / "c0").status == "interrupted"
    assert "interrupted: continue with" in log_of(tmp_path / "c0"), "c0's worker did not save it on a SIGTERM"
    assert RunFolder(tmp_path / "c1").status == "completed"
    assert not (tmp_path / "c2").exists()  # never started
    assert not any(alive(owner_pid(tmp_path / c)) for c in ("c0", "c1")), "a worker outlived the study's error"


def drive_two_long_children(parent: str) -> None:
    """A study's process for the orphan test: two children training in workers, until it is killed.
    Its fork server preloads nothing but its SIGTERM policy: these workers need no torch."""
    import convexp.execution.workers as workers

    workers.WORKER_PRELOAD = ["convexp.fork_server"]
    run_children(tasks_of(Path(parent), [train_until_stopped, train_until_stopped]), Execution(jobs=2, threads=1),
                 Reporter(quiet=True))


@pytest.mark.slow  # a study's process of its own, which imports torch and starts a fork server
def test_workers_stop_when_the_study_process_is_killed(tmp_path):
    """SIGKILL of the study's process (nothing of it can run): its fork server exits, and each worker
    gets SIGTERM from the kernel (PR_SET_PDEATHSIG), saves its child as interrupted and ends."""
    script = f"from tests.test_executor import drive_two_long_children; drive_two_long_children({str(tmp_path)!r})"
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    pids = []
    try:
        wait_for(lambda: running_in(tmp_path / "c0") and running_in(tmp_path / "c1") or driver.poll() is not None,
                 60, "both children training")
        assert driver.poll() is None, driver.communicate()[0]
        pids = [owner_pid(tmp_path / c) for c in ("c0", "c1")]
        driver.kill()
        driver.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in pids), 10, f"workers {pids} gone after their study was killed")
        assert RunFolder(tmp_path / "c0").status == RunFolder(tmp_path / "c1").status == "interrupted"
    finally:
        driver.kill()
        for pid in filter(alive, pids):  # only when the test failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)


def record_order(tmp_path, execution: Execution) -> list[str]:
    tasks = [ChildTask(f"w{w}", tmp_path / f"w{w}", complete, {"parent": tmp_path, "name": f"w{w}"}, work=w)
             for w in (2, 5, 1, 4, 3)]
    order = []
    run_children(tasks, execution, Reporter(quiet=True), on_start=lambda task: order.append(task.name))
    assert all(RunFolder(t.folder).status == "completed" for t in tasks)
    return order


def test_workers_start_the_largest_child_first(tmp_path):
    assert record_order(tmp_path, Execution(jobs=2, threads=1)) == ["w5", "w4", "w3", "w2", "w1"]


def test_a_dead_worker_leaves_its_child_failed_and_the_others_go_on(tmp_path):
    tasks = tasks_of(tmp_path, [complete, die_while_running, complete])
    seconds = run_children(tasks, Execution(jobs=2, threads=1), Reporter(quiet=True))
    assert set(seconds) == {"c0", "c1", "c2"}
    assert RunFolder(tmp_path / "c0").status == RunFolder(tmp_path / "c2").status == "completed"
    dead = RunFolder(tmp_path / "c1").read_summary()
    assert dead["status"] == "failed"
    assert "died of SIGKILL (killed, or out of memory)" in dead["error"] and "convexp resume" in dead["error"]
    assert (tmp_path / "c0" / "threads.txt").read_text() == "1"  # --threads reached the worker


def test_a_child_whose_worker_died_before_it_started_is_failed_then_runs_as_new(tmp_path):
    run_children(tasks_of(tmp_path, [die_before_starting]), Execution(jobs=2, threads=1), Reporter(quiet=True))
    stub = RunFolder(tmp_path / "c0").read_summary()
    assert stub["status"] == "failed" and "died of SIGKILL" in stub["error"]
    complete(tmp_path, "c0", Reporter(quiet=True))  # what resume does: the stub is not a run to continue
    summary = RunFolder(tmp_path / "c0").read_summary()
    assert summary["status"] == "completed" and summary["command"] == "train-mnist" and "error" not in summary
    assert (tmp_path / "c0" / "config.yaml").is_file()


def test_the_fork_server_outlives_a_sigterm_sent_to_the_whole_job(tmp_path):
    """systemd, timeout and scancel SIGTERM every process of the job: the fork server the workers
    start from ignores it (the study learns through it how each worker ended), while a worker
    still ends on SIGTERM before its run starts, as a spawned one did."""
    from multiprocessing import forkserver

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run_children(tasks_of(tmp_path / "a", [complete]), Execution(jobs=2, threads=1), Reporter(quiet=True))
    server = forkserver._forkserver._forkserver_pid  # multiprocessing's one server of this process
    os.kill(server, signal.SIGTERM)
    time.sleep(0.2)
    os.kill(server, 0)  # still there: ProcessLookupError otherwise
    run_children(tasks_of(tmp_path / "b", [terminated_before_starting, complete]), Execution(jobs=2, threads=1),
                 Reporter(quiet=True))
    assert forkserver._forkserver._forkserver_pid == server  # the same server served them
    assert RunFolder(tmp_path / "a" / "c0").status == "completed"
    assert "died of SIGTERM (stopped)" in RunFolder(tmp_path / "b" / "c0").read_summary()["error"]
    assert RunFolder(tmp_path / "b" / "c1").status == "completed"


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


SWEEP = ["--set", "train.epochs=1", "--set", "train.max_batches=20", "--set", "sweep.batch_sizes=[16, 32]",
         "--set", "sweep.seeds=[0]", *SMOKE_EVAL]
NEEDS_RAY = "--executor ray needs Ray: make setup installs it (pip install -e '.[ray]')"


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for this module's Ray tests, started as `--executor ray` starts one
    (each start costs 5-8 s); studies run here join it rather than starting their own."""
    ray = pytest.importorskip("ray", reason=NEEDS_RAY)
    from convexp.execution.ray_tasks import connect

    started = connect(ray, None, Reporter(quiet=True))  # a local instance, unless RAY_ADDRESS names a cluster
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.xdist_group("ray")  # one Ray instance for both
@pytest.mark.slow(seconds=45)
def test_workers_and_ray_give_byte_identical_children_to_a_sequential_sweep(tmp_path, mnist_root, ray_instance):
    ways = {"sequential": ["--jobs", "1"], "jobs2": ["--jobs", "2"], "ray": ["--executor", "ray"]}
    for way, options in ways.items():
        result = invoke("sweep-batch", *mini(mnist_root), *SWEEP, *options, "--threads", "1",
                        "--out", str(tmp_path / way), "-q")
        assert result.returncode == 0, result.stderr
        (study,) = (tmp_path / way).iterdir()
        assert json.loads((study / "summary.json").read_text())["status"] == "completed"
    (sequential,) = (tmp_path / "sequential").iterdir()
    for way in ("jobs2", "ray"):
        (study,) = (tmp_path / way).iterdir()
        for child in ("bs16-seed0", "bs32-seed0"):
            for name in ("metrics.csv", "batches.csv"):
                assert (study / child / name).read_bytes() == (sequential / child / name).read_bytes(), f"{way}: {child}/{name}"
            assert "checkpoint.pt" not in {p.name for p in (study / child).iterdir()}  # the folder came back as it ended
            if platform.machine() in ("x86_64", "AMD64"):  # every way flushes denormals first, as the CLI does
                assert json.loads((study / child / "summary.json").read_text())["cpu_denormals"] == "flushed to zero"


@pytest.mark.slow  # with the other Ray test (slow tests of a module run together): one instance for both
@pytest.mark.xdist_group("ray")  # one Ray instance for both
def test_a_dead_ray_worker_leaves_its_child_failed(tmp_path, ray_instance):
    tasks = tasks_of(tmp_path, [complete, die_while_running])
    run_children(tasks, Execution(jobs=0, threads=1, executor="ray"), Reporter(quiet=True))
    assert RunFolder(tmp_path / "c0").status == "completed"
    assert (tmp_path / "c0" / "threads.txt").read_text() == "1"  # trained on a worker; its files came back
    dead = RunFolder(tmp_path / "c1").read_summary()
    assert dead["status"] == "failed" and "its Ray task failed" in dead["error"]


@pytest.mark.slow  # with the other Ray tests
@pytest.mark.xdist_group("ray")
def test_an_unusable_checkpoint_on_ray_stops_the_study_with_its_message(tmp_path, ray_instance):
    stopped_by_an_unusable_checkpoint(tmp_path, Execution(jobs=0, threads=1, executor="ray"))


@pytest.mark.slow  # with the other Ray tests
@pytest.mark.xdist_group("ray")
def test_a_process_in_ray_keeps_its_instance_and_refuses_to_join_another(ray_instance):
    from convexp.execution.ray_tasks import connect

    assert connect(ray_instance, None, Reporter(quiet=True)) is False  # joined already: kept, not shut down by us
    with pytest.raises(ConvexpError, match="this process has already joined a Ray instance"):
        connect(ray_instance, "127.0.0.1:6379", Reporter(quiet=True))


def test_ray_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = invoke("sweep-batch", "--executor", "ray")
    assert result.returncode == 2 and "--executor ray needs Ray, an optional dependency: pip install -e '.[ray]'" in result.stderr


@pytest.mark.slow(seconds=30)
def test_ctrl_c_stops_every_worker_and_the_study_resumes(tmp_path, mnist_root):
    out = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "convexp", "sweep-batch", *mini(mnist_root), *SMOKE_EVAL, "--set", "train.epochs=3",
                                "--set", "train.max_batches=40", "--set", "sweep.batch_sizes=[16, 32]", "--set", "sweep.seeds=[0]", "--jobs", "2",
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
    result = invoke("resume", str(study), "--jobs", "2", "--threads", "1", "-q")
    assert result.returncode == 0, result.stderr
    assert all(RunFolder(study / c).status == "completed" for c in ("bs16-seed0", "bs32-seed0"))
    assert len((study / "bs16-seed0" / "metrics.csv").read_text().splitlines()) == 1 + 3
    # and every number as a study that ran one child after another, uninterrupted, at the same threads
    straight = invoke("sweep-batch", *mini(mnist_root), *SMOKE_EVAL, "--set", "train.epochs=3", "--set", "train.max_batches=40",
                      "--set", "sweep.batch_sizes=[16, 32]", "--set", "sweep.seeds=[0]", "--threads", "1",
                      "--out", str(tmp_path / "straight"), "-q")
    assert straight.returncode == 0, straight.stderr
    assert_same_files(study, only_run(tmp_path / "straight"))


def test_live_view_reads_each_child_from_its_folder(tmp_path):
    from convexp.study_view import child_progress, progress_table

    step = RunFolder(tmp_path / "sweep-batch-seed0")  # a study step: its children's epochs add up
    for child, accuracies in (("bs16-seed0", [0.95, 0.97]), ("bs32-seed0", [0.96])):
        RunFolder(step.path / child).write_csv("metrics.csv", [{"epoch": i + 1, "val_accuracy": a} for i, a in enumerate(accuracies)])
    step.write_json("summary.json", {"status": "running"})
    now = time.perf_counter()
    progress = child_progress("sweep-batch-seed0", step.path, epochs_planned=6, started=now - 30, status="running")
    assert (progress.status, progress.epochs_done, progress.epochs_planned) == ("running", 3, 6)
    assert progress.val_accuracy in (0.97, 0.96)  # the latest written
    assert progress.eta() in ("30s", "31s")  # 3 epochs in 30 s, 3 left
    waiting = child_progress("later", tmp_path / "later", 4, None, "waiting")
    assert (waiting.status, waiting.epochs_done, waiting.eta()) == ("waiting", 0, "")
    table = progress_table([progress, waiting])
    assert table.row_count == 2 and [c.header for c in table.columns][:3] == ["child", "status", "epoch"]


@pytest.mark.slow  # with the other Ray tests
@pytest.mark.xdist_group("ray")
def test_ctrl_c_cancels_every_ray_task_and_the_children_resume(tmp_path, ray_instance):
    """Ctrl-C while Ray tasks train: every task is cancelled (its worker process killed), each child
    is left interrupted here, and running the unfinished tasks again (what resume does) completes them."""
    hold = tmp_path / "hold"
    hold.touch()
    tasks = [ChildTask(f"c{i}", tmp_path / f"c{i}", train_until_stopped,
                       {"parent": tmp_path, "name": f"c{i}", "hold": hold}) for i in range(2)]
    pid_files = [tmp_path / f"c{i}.pid" for i in range(2)]

    def ctrl_c_once_both_train():
        try:
            wait_for(lambda: all(p.is_file() for p in pid_files), 180, "both Ray tasks started")  # cold workers import torch
        finally:  # either way run_children returns: with the interrupt, or failing on a timeout
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the runner set
    timer = threading.Thread(target=ctrl_c_once_both_train, daemon=True)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            run_children(tasks, Execution(jobs=0, threads=1, executor="ray"), Reporter(quiet=True))
        timer.join(5)
        assert all(p.is_file() for p in pid_files), "the Ray tasks had not started within 180 s when Ctrl-C came"
        pids = [int(p.read_text()) for p in pid_files]
        wait_for(lambda: not any(alive(pid) for pid in pids), 20, f"Ray workers {pids} killed by the cancel")
        assert [RunFolder(t.folder).status for t in tasks] == ["interrupted", "interrupted"]
    finally:
        signal.signal(signal.SIGINT, previous)
        hold.unlink(missing_ok=True)  # a task the cancel missed ends now
    unfinished = [t for t in tasks if RunFolder(t.folder).status != "completed"]
    run_children(unfinished, Execution(jobs=0, threads=1, executor="ray"), Reporter(quiet=True))
    assert [RunFolder(t.folder).status for t in tasks] == ["completed", "completed"]

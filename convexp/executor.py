"""Where a study's child runs execute: one after another here, or several at once in worker processes.

A study (sweep-batch, varres-pool, reproduce) hands over its unfinished children as
`ChildTask`s. Each task trains one child into its own folder under the study and records there
how it ended, through lifecycle.open_run like any run; the study then reads every child back
from its folder, so aggregation is the same whichever way the children ran.

With `jobs` > 1 each child runs in a worker process of its own, forked from a server process
that has imported torch and convexp (see worker_context), at most `jobs` at once, each with
`threads` CPU threads. A worker that dies (killed, out of memory) leaves its child `failed`
with the reason; the others go on. Ctrl-C or SIGTERM stops every worker, each saving its child
as `interrupted`, and leaves no process behind.

On the CPU the thread count changes a child's numbers in the last bits (PyTorch splits sums
across threads), so a child matches a sequential run exactly when both used the same `threads`.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import multiprocessing.context
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convexp.console import Reporter
from convexp.errors import ConvexpError, DiskFull
from convexp.runs import RunFolder

STOP_GRACE_SECONDS = 60  # a stopped worker saves its checkpoint in this time, or is killed
DISK_FULL_EXIT = 28  # a worker's exit code when the disk is full (ENOSPC): the study stops


@dataclass(frozen=True)
class Execution:
    """How a study runs its children: `jobs` at once, `threads` CPU threads each (0: the cores
    divided among the jobs), here ("local") or as Ray tasks ("ray", at `ray_address` or on a
    local Ray instance; there jobs 0 leaves how many run at once to Ray's scheduler)."""

    jobs: int = 1
    threads: int = 0
    executor: str = "local"
    ray_address: str | None = None

    def threads_per_child(self) -> int:
        return self.threads or max(1, usable_cores() // max(1, self.jobs))

    @property
    def in_this_process(self) -> bool:
        """Children train here, one after another (not in workers): they can share this process's tensors."""
        return self.executor == "local" and self.jobs <= 1


def usable_cores() -> int:
    """Cores this process may run on (taskset, cgroups, Slurm), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_jobs(device_type: str) -> int:
    """--jobs auto: one child per core on the CPU (two threads beat one by only 1.2-1.6x here);
    on a GPU one per two cores, each feeding the GPU from its own Python process."""
    cores = usable_cores()
    return max(1, cores if device_type == "cpu" else cores // 2)


SEQUENTIAL = Execution()


@dataclass(frozen=True)
class ChildTask:
    """One child run: `function(**kwargs, reporter=...)` trains it into `folder`.

    `function` is defined at module level, so a worker process can import it by name; kwargs are
    plain values, typed configs and CPU tensors (which reach a worker through shared memory).
    `work` orders parallel runs, largest first, so the last to start are short.
    """

    name: str
    folder: Path
    function: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)
    work: float = 0.0
    epochs: int = 0  # planned, of the child and its own children: for the live view


OnStart = Callable[[ChildTask], None]
OnEnd = Callable[[ChildTask, float], None]  # the task, and the seconds it took


def run_children(tasks: list[ChildTask], execution: Execution, reporter: Reporter,
                 on_start: OnStart = lambda task: None, on_end: OnEnd = lambda task, seconds: None) -> dict[str, float]:
    """Run every task; each child's folder says how it ended. Returns seconds per task, once all have ended.

    on_start / on_end are called here, in this process, as each task starts and ends."""
    seconds: dict[str, float] = {}
    hooks = (on_start, on_end)
    if execution.executor == "ray":
        from convexp.ray_executor import run_on_ray

        run_on_ray(sorted(tasks, key=lambda t: -t.work), execution, reporter, seconds, hooks)
        return seconds
    if execution.in_this_process:
        with thread_count(execution.threads):
            for task in tasks:
                on_start(task)
                started = time.perf_counter()
                try:
                    task.function(**task.kwargs, reporter=reporter)
                finally:
                    seconds[task.name] = time.perf_counter() - started
                    on_end(task, seconds[task.name])
        return seconds
    run_in_workers(sorted(tasks, key=lambda t: -t.work), execution, reporter, seconds, hooks)
    return seconds


@contextlib.contextmanager
def thread_count(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to `threads` (0: left as they are) for the duration."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_in_workers(tasks: list[ChildTask], execution: Execution, reporter: Reporter, seconds: dict[str, float],
                   hooks: tuple[OnStart, OnEnd]) -> None:
    context = worker_context()
    threads = execution.threads_per_child()
    pending = list(tasks)
    running: dict[Any, tuple[Any, ChildTask, float]] = {}  # sentinel -> (process, task, start time)
    ended: dict[str, str] = {}  # name -> final status
    reporter.line(f"running {len(tasks)} child run(s), {min(execution.jobs, len(tasks))} at once, "
                  f"{threads} CPU thread(s) each")
    with live_view(reporter, tasks, running, ended) as refresh:
        try:
            while pending or running:
                while pending and len(running) < execution.jobs:
                    task = pending.pop(0)
                    hooks[0](task)
                    process = context.Process(target=work_in_worker, args=(task, threads, refresh is not None),
                                              name=f"convexp {task.name}")
                    process.start()
                    running[process.sentinel] = (process, task, time.perf_counter())
                    reporter.line(f"[{task.name}] started (worker process {process.pid})")
                for sentinel in multiprocessing.connection.wait(list(running), timeout=1.0):
                    process, task, started = running.pop(sentinel)
                    process.join()
                    ended[task.name] = settle(task, process.exitcode)
                    if process.exitcode == DISK_FULL_EXIT:  # every later child would fail the same way
                        pending.clear()
                        raise DiskFull(f"the disk filled up while {task.name} ran: free some space, then "
                                       "`convexp resume` the study")
                    seconds[task.name] = time.perf_counter() - started
                    reporter.line(f"[{task.name}] {ended[task.name]} after {seconds[task.name]:.0f} s"
                                  f"{'' if not pending else f'; {len(pending)} waiting'}")
                    hooks[1](task, seconds[task.name])
                if refresh is not None:
                    refresh()
        except BaseException:  # Ctrl-C, SIGTERM, or an error here: no worker may train on unwatched
            stop_workers([process for process, _, _ in running.values()])
            for process, task, started in running.values():
                settle(task, process.exitcode, stopped=True)
                seconds[task.name] = time.perf_counter() - started
                hooks[1](task, seconds[task.name])
            raise


# What every worker needs before its child starts: importing these takes 4-5 s of a core, which
# the fork server pays once instead of each worker paying it again. fork_server first: its
# SIGTERM policy must hold from the start.
WORKER_PRELOAD = ["convexp.fork_server", "torch", "torchvision.datasets", "convexp.experiments.common",
                  "convexp.experiments.reproduce", "convexp.experiments.varres_pool"]


def worker_context() -> multiprocessing.context.BaseContext:
    """Workers are forked from a server process that has imported torch and convexp and done
    nothing else: no CUDA context and no torch thread pool to copy, so CUDA and threads work in
    a worker as in a freshly spawned process (plain fork from here would copy both). One server
    serves the whole process, started by its first study: workers see the environment variables
    of that moment. Where there is no fork server (Windows), workers are spawned."""
    import torch.multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    return context


@contextlib.contextmanager
def live_view(reporter: Reporter, tasks: list[ChildTask], running: dict, ended: dict[str, str]):
    """On a terminal: one live table of every child (status, epoch, validation accuracy, ETA),
    refreshed by the loop; yields its refresh function, or None where lines are printed instead."""
    if not reporter.live_bars:
        yield None
        return
    from rich.live import Live

    from convexp.study_view import child_progress, progress_table

    def table():
        started = {task.name: start for _, task, start in running.values()}
        rows = [child_progress(t.name, t.folder, t.epochs, started.get(t.name),
                               ended.get(t.name, "running" if t.name in started else "waiting")) for t in tasks]
        return progress_table(rows)

    with Live(table(), console=reporter.console, refresh_per_second=1, transient=False) as live:
        yield lambda: live.update(table())
        live.update(table())


def work_in_worker(task: ChildTask, threads: int, silent: bool = False) -> None:
    """A worker process's whole life: one child, then exit (code 130 when interrupted).
    `silent`: the study shows a live table, so the worker's lines go to its child's log.txt only."""
    from rich.console import Console

    from convexp.memory import keep_freed_memory

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server's is ignored (convexp/fork_server.py)
    keep_freed_memory()  # as the CLI does, before any tensor exists
    stop_with_parent()
    torch.set_num_threads(threads)
    console = Console(file=open(os.devnull, "w")) if silent else None
    reporter = Reporter(quiet=True, console=console, prefix=f"[{task.name}] ")
    try:
        task.function(**task.kwargs, reporter=reporter)
    except KeyboardInterrupt:
        sys.exit(130)
    except DiskFull as exc:
        reporter.line(f"failed: {exc}")
        sys.exit(DISK_FULL_EXIT)
    except ConvexpError as exc:  # already recorded in the child's folder
        reporter.line(f"failed: {exc}")
        sys.exit(2)


def stop_with_parent() -> None:
    """Linux: SIGTERM this worker when its parent dies, so no worker trains on as an orphan; the
    SIGTERM saves its child as interrupted. The parent is the fork server, which exits as soon
    as the study's process does, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def settle(task: ChildTask, exit_code: int | None, stopped: bool = False, reason: str | None = None) -> str:
    """The child's status once its worker has ended; one its dead worker left unfinished becomes
    failed (for `reason`, or the exit code's), or interrupted when the study stopped it (Ctrl-C, SIGTERM)."""
    from convexp.lifecycle import set_final

    child = RunFolder(task.folder)
    try:
        status = child.status
    except ConvexpError:  # a damaged summary.json: the child did not end well either
        status = None
    if status in ("completed", "failed", "interrupted"):
        return status
    child.path.mkdir(parents=True, exist_ok=True)
    if stopped:
        set_final(child, status="interrupted", name=task.name)
        return "interrupted"
    reason = reason or worker_death(exit_code)
    set_final(child, status="failed", error=reason, name=task.name)
    return f"failed ({reason})"


def worker_death(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name
        why = "killed, or out of memory" if -exit_code == signal.SIGKILL else "stopped"
        return f"its worker process died of {name} ({why}) before the run ended; `convexp resume` runs it again"
    return f"its worker process exited with code {exit_code} before the run ended; `convexp resume` runs it again"


def stop_workers(processes: list) -> None:
    """SIGTERM every live worker (each saves its child as interrupted), then SIGKILL stragglers."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()

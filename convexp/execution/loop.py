"""The one scheduling loop of a study's children, over one of two backends: worker processes
here (workers.py) or Ray tasks (ray_tasks.py, imported only when asked for).

A backend submits a task, says which of the submitted have ended, collects how one ended (the
child's status, from its folder), and stops all that still run. The loop keeps at most the
backend's limit running, largest work first, and stops everything on any exception: Ctrl-C,
SIGTERM, a full disk, or an error here, so no child trains on unwatched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from convexp.console import Reporter
from convexp.execution.task import ChildTask, Execution, OnEnd, OnStart


class Backend(Protocol):
    limit: int  # children at once

    def session(self, tasks: list[ChildTask]) -> contextlib.AbstractContextManager: ...  # set up, and shut down
    def submit(self, task: ChildTask) -> Any: ...  # starts it; returns its handle
    def wait(self, handles: list[Any]) -> list[Any]: ...  # those that have ended (waits a little for one)
    def collect(self, handle: Any, task: ChildTask) -> str: ...  # how it ended, its folder brought up to date
    def stop(self, running: dict[Any, ChildTask]) -> None: ...  # stops them all, each child left interrupted
    def refresh(self) -> None: ...  # between waits: e.g. the live table of children


def run_children(tasks: list[ChildTask], execution: Execution, reporter: Reporter,
                 on_start: OnStart = lambda task: None, on_end: OnEnd = lambda task, seconds: None) -> dict[str, float]:
    """Run every task; each child's folder says how it ended. Returns seconds per task, once all have ended.

    on_start / on_end are called here, in this process, as each task starts and ends."""
    seconds: dict[str, float] = {}
    if execution.in_this_process:
        run_here(tasks, execution, reporter, seconds, on_start, on_end)
        return seconds
    if execution.executor == "ray":
        from convexp.execution.ray_tasks import RayBackend

        backend: Backend = RayBackend(execution, reporter, len(tasks))
    else:
        from convexp.execution.workers import WorkerBackend

        backend = WorkerBackend(execution, reporter)
    schedule(sorted(tasks, key=lambda t: -t.work), backend, reporter, seconds, on_start, on_end)
    return seconds


def run_here(tasks: list[ChildTask], execution: Execution, reporter: Reporter, seconds: dict[str, float],
             on_start: OnStart, on_end: OnEnd) -> None:
    """One after another in this process, in the order given."""
    with thread_count(execution.threads):
        for task in tasks:
            on_start(task)
            started = time.perf_counter()
            try:
                task.run(reporter)
            finally:
                seconds[task.name] = time.perf_counter() - started
                on_end(task, seconds[task.name])


def schedule(tasks: list[ChildTask], backend: Backend, reporter: Reporter, seconds: dict[str, float],
             on_start: OnStart, on_end: OnEnd) -> None:
    pending = list(tasks)
    running: dict[Any, tuple[ChildTask, float]] = {}  # handle -> (task, start time)
    with backend.session(tasks):
        try:
            while pending or running:
                while pending and len(running) < backend.limit:
                    task = pending.pop(0)
                    on_start(task)
                    running[backend.submit(task)] = (task, time.perf_counter())
                for handle in backend.wait(list(running)):
                    task, started = running.pop(handle)
                    status = backend.collect(handle, task)  # a full disk raises: every later child would fail alike
                    seconds[task.name] = time.perf_counter() - started
                    waiting = f"; {len(pending)} waiting" if pending else ""
                    reporter.line(f"[{task.name}] {status} after {seconds[task.name]:.0f} s{waiting}")
                    on_end(task, seconds[task.name])
                backend.refresh()
        except BaseException:  # Ctrl-C, SIGTERM, a full disk, or an error here: stop what runs; what ended is kept
            pending.clear()
            backend.stop({handle: task for handle, (task, _) in running.items()})
            for task, started in running.values():
                seconds[task.name] = time.perf_counter() - started
                on_end(task, seconds[task.name])
            raise


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

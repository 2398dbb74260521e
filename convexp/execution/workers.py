"""A study's children in worker processes here (--jobs N), each forked from a server process that
has imported torch and convexp (see worker_context), each with `threads` CPU threads.

A worker that dies (killed, out of memory) leaves its child `failed` with the reason; the
others go on. Ctrl-C or SIGTERM stops every worker, each saving its child as `interrupted`, and
leaves no process behind. On the CPU the thread count changes a child's numbers in the last bits
(PyTorch splits sums across threads), so a child matches a sequential run exactly when both used
the same `threads`.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import multiprocessing.context
import os
import signal
import sys
import time
from collections.abc import Iterator

from convexp.console import Reporter
from convexp.errors import STOPS_THE_STUDY, ConvexpError
from convexp.execution.task import ChildTask, Execution, settle

STOP_GRACE_SECONDS = 60  # a stopped worker saves its checkpoint in this time, or is killed
STOP_STUDY_EXIT = 28  # a worker's exit code when its child met one of STOPS_THE_STUDY (a full disk, ...)

# What every worker needs before its child starts: importing these takes 4-5 s of a core, which
# the fork server pays once instead of each worker paying it again. fork_server first: its
# SIGTERM policy must hold from the start. The training code, not the experiment modules (which
# load it inside their functions).
WORKER_PRELOAD = ["convexp.fork_server", "torch", "torchvision.datasets", "convexp.lifecycle", "convexp.train",
                  "convexp.data", "convexp.models", "convexp.varres", "convexp.augment", "convexp.plots",
                  "convexp.experiments.common"]


class WorkerBackend:
    """Each child in a worker process of its own, at most `jobs` at once."""

    def __init__(self, execution: Execution, reporter: Reporter):
        self.limit = execution.jobs
        self.threads = execution.threads_per_child()
        self.reporter = reporter
        self.context = worker_context()
        self.processes: dict[object, tuple[multiprocessing.process.BaseProcess, ChildTask, float]] = {}
        self.stop_reasons: dict[object, multiprocessing.connection.Connection] = {}  # what a worker says stops the study
        self.ended: dict[str, str] = {}  # name -> how it ended, for the live table
        self.refresh_view = None

    @contextlib.contextmanager
    def session(self, tasks: list[ChildTask]) -> Iterator[None]:
        self.reporter.line(f"running {len(tasks)} child run(s), {min(self.limit, len(tasks))} at once, "
                           f"{self.threads} CPU thread(s) each")
        with live_view(self.reporter, tasks, self.processes, self.ended) as refresh:
            self.refresh_view = refresh
            yield

    def submit(self, task: ChildTask) -> object:
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(target=work_in_worker, args=(task, self.threads, self.refresh_view is not None, send),
                                       name=f"convexp {task.name}")
        process.start()
        send.close()  # the worker holds its own copy
        self.processes[process.sentinel] = (process, task, time.perf_counter())
        self.stop_reasons[process.sentinel] = receive
        self.reporter.line(f"[{task.name}] started (worker process {process.pid})")
        return process.sentinel

    def wait(self, handles: list[object]) -> list[object]:
        return multiprocessing.connection.wait(handles, timeout=1.0)

    def collect(self, handle: object, task: ChildTask) -> str:
        process, _, _ = self.processes.pop(handle)
        receive = self.stop_reasons.pop(handle)
        process.join()
        reason = stop_reason_sent(receive)
        self.ended[task.name] = settle(task, process.exitcode)
        if reason is not None:  # a full disk (every later child would fail the same way), an unusable checkpoint
            raise reason
        return self.ended[task.name]

    def stop(self, running: dict[object, ChildTask]) -> None:
        processes = [self.processes[handle][0] for handle in running]
        stop_workers(processes)
        for handle in running:
            self.stop_reasons.pop(handle).close()
        for process, task in zip(processes, running.values()):
            self.ended[task.name] = settle(task, process.exitcode, stopped=True)

    def refresh(self) -> None:
        if self.refresh_view is not None:
            self.refresh_view()


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


def stop_reason_sent(receive: multiprocessing.connection.Connection) -> BaseException | None:
    """The error a worker sent back (one of STOPS_THE_STUDY), or None: nothing sent, or the pipe
    closed by a worker that died first."""
    try:
        return receive.recv() if receive.poll() else None
    except (EOFError, OSError):
        return None
    finally:
        receive.close()


def work_in_worker(task: ChildTask, threads: int, silent: bool, stop_reason: multiprocessing.connection.Connection) -> None:
    """A worker process's whole life: one child, then exit (code 130 when interrupted).
    `silent`: the study shows a live table, so the worker's lines go to its child's log.txt only.
    `stop_reason`: where an error that stops the whole study goes, the error itself (it pickles)."""
    import torch
    from rich.console import Console

    from convexp.memory import keep_freed_memory
    from convexp.precision import flush_denormals

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server's is ignored (convexp/fork_server.py)
    keep_freed_memory()  # as the CLI does, before any tensor exists
    flush_denormals()  # as the CLI does, before any tensor operation starts threads
    release_the_servers_lifeline()
    stop_with_parent()
    torch.set_num_threads(threads)
    console = Console(file=open(os.devnull, "w")) if silent else None
    reporter = Reporter(quiet=True, console=console, prefix=f"[{task.name}] ")
    try:
        task.run(reporter)
    except KeyboardInterrupt:
        sys.exit(130)
    except STOPS_THE_STUDY as exc:
        reporter.line(f"failed: {exc}")
        stop_reason.send(exc)
        sys.exit(STOP_STUDY_EXIT)
    except ConvexpError as exc:  # already recorded in the child's folder
        reporter.line(f"failed: {exc}")
        sys.exit(2)


def release_the_servers_lifeline() -> None:
    """Close this worker's copy of the pipe whose end tells the fork server that the study's
    process is gone. multiprocessing hands every forked child a copy of its write end
    (forkserver._forkserver._forkserver_alive_fd, a private attribute: no public way exists);
    held open here, it kept the server, and so this worker (stop_with_parent), alive after the
    study died: orphans training on with nobody watching."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        os.close(fd)
        server._forkserver_alive_fd = None


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

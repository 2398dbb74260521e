"""A study's children as Ray tasks (`--executor ray`): on a cluster, or on a local Ray instance.

A Ray worker may be another machine that shares no disk with this one. So each child trains in
a scratch folder on its worker, seeded with the files its folder already had here (an
interrupted child goes on from its checkpoint); when it ends, every file of that folder comes
back and replaces the child's folder here. A task's data (ChildTask.data) travels once through
Ray's object store or, for `reproduce`'s steps, is read on the worker from the paths in the
step's config: those must exist there.

Each task asks Ray for `threads` CPUs (and one GPU with --device cuda) and is never retried,
so a child's numbers are those of one run. A worker that dies leaves its child failed with Ray's
reason; Ctrl-C cancels every task and leaves the children interrupted, resumable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from convexp.console import Reporter
from convexp.errors import ConvexpError, UnusableCheckpoint
from convexp.execution.task import ChildTask, Execution, settle
from convexp.precision import flush_denormals
from convexp.runs import write_atomic


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConvexpError("--executor ray needs Ray, an optional dependency: pip install -e '.[ray]' "
                           "(make setup installs it), or use --jobs N on this machine") from None
    return ray


class RayBackend:
    """Each child a Ray task asking for `threads` CPUs (and a GPU on CUDA); at most `jobs` at
    once, or as many as Ray's resources allow (jobs 0)."""

    def __init__(self, execution: Execution, reporter: Reporter, tasks: int):
        self.ray = import_ray()
        self.execution = execution
        self.reporter = reporter
        self.threads = execution.threads or 1
        self.limit = execution.jobs if execution.jobs > 0 else tasks
        self.remote = self.ray.remote(max_retries=0)(train_on_worker)
        self.data_refs: dict[int, object] = {}  # id(data) -> its ObjectRef: each data set put once

    @contextlib.contextmanager
    def session(self, tasks: list[ChildTask]) -> Iterator[None]:
        self.reporter.line(f"running {len(tasks)} child run(s) as Ray tasks, {self.threads} CPU(s) each"
                           + (f", at most {self.limit} at once" if self.limit < len(tasks) else ""))
        started_here = connect(self.ray, self.execution.ray_address, self.reporter)
        try:
            yield
        finally:
            if started_here:
                self.ray.shutdown()

    def submit(self, task: ChildTask) -> object:
        data_ref = None
        if task.data is not None:
            if id(task.data) not in self.data_refs:  # into the object store once
                self.data_refs[id(task.data)] = self.ray.put(task.data)
            data_ref = self.data_refs[id(task.data)]
        gpus = 1 if str(task.device or "cpu").startswith("cuda") else 0
        shipped = dataclasses.replace(task, data=None)  # the data goes by reference, not inside the task
        # A worker on another machine has its own environment: it flushes denormals as this process does.
        env = {"env_vars": {"CONVEXP_FLUSH_DENORMALS": "1" if flush_denormals() else "0"}}
        ref = self.remote.options(num_cpus=self.threads, num_gpus=gpus, runtime_env=env).remote(
            shipped, self.threads, folder_files(task.folder), data_ref)
        self.reporter.line(f"[{task.name}] submitted to Ray")
        return ref

    def wait(self, handles: list[object]) -> list[object]:
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def collect(self, handle: object, task: ChildTask) -> str:
        try:
            files, reason = self.ray.get(handle)
        except self.ray.exceptions.RayError as exc:
            return settle(task, None, reason=f"its Ray task failed ({type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0][:200]}); `convexp resume` runs it again")
        replace_folder(task.folder, files)
        ended = settle(task, 0)
        if reason is not None:  # an unusable checkpoint: the study stops, as for one here
            raise UnusableCheckpoint(reason.replace(SCRATCH, str(task.folder.parent)))
        return ended

    def stop(self, running: dict[object, ChildTask]) -> None:
        """Cancel what still runs; the files of a task that had just finished are kept."""
        refs = list(running)
        finished, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        for ref, task in running.items():
            if ref in finished:
                try:
                    replace_folder(task.folder, self.ray.get(ref)[0])
                except self.ray.exceptions.RayError:
                    pass
            else:
                self.ray.cancel(ref, force=True)
            settle(task, None, stopped=True)

    def refresh(self) -> None:
        pass


def connect(ray, address: str | None, reporter: Reporter) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local instance; True if started here.
    A program that has already joined one (convexp used as a library) keeps it, and its shutdown;
    an explicit `address` is then an error, since one process joins one instance.

    ray.init replaces this process's SIGTERM handler; the run's own (SIGTERM = Ctrl-C) is put back."""
    if ray.is_initialized():
        if address:  # it cannot join a second one: say so rather than train elsewhere
            raise ConvexpError(f"--ray-address {address}: this process has already joined a Ray instance, and "
                               "one process joins one; leave --ray-address out to use it")
        reporter.line("Ray: the instance this process has already joined")
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if address:
            raise ConvexpError(f"cannot reach the Ray cluster at {address} ({why}): check --ray-address (or "
                               "RAY_ADDRESS), or leave it out for a local Ray instance") from None
        raise ConvexpError(f"cannot start a local Ray instance ({why}): see `ray start --head` for what is wrong, "
                           "or use --jobs N without Ray") from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    resources = ray.cluster_resources()
    reporter.line(f"Ray: {'cluster at ' + address if address else 'a local instance'}, "
                  f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    return not address


def check_reachable(address: str) -> None:
    """host:port (or ray://host:port) answers within 5 s: ray.init itself retries a dead address
    for minutes before it gives up."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConvexpError(f"--ray-address {address!r} is not host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConvexpError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): check --ray-address "
                           "(or RAY_ADDRESS), or leave it out for a local Ray instance") from None


SCRATCH = "<the study folder>"  # in a message from a Ray worker, where its scratch copy was


def train_on_worker(task: ChildTask, threads: int, files: dict[str, bytes],
                    splits=None) -> tuple[dict[str, bytes], str | None]:
    """On a Ray worker: the child trains in a scratch copy of its folder; returns every file of it,
    and, if its checkpoint could not be used, that error's message, which stops the whole study.
    (A full disk here is this node's scratch space: that child fails, the study goes on.)"""
    flush_denormals()  # as the CLI does; once per worker process, whose first task this may be
    torch.set_num_threads(threads)
    reporter = Reporter(quiet=True, prefix=f"[{task.name}] ")
    with tempfile.TemporaryDirectory(prefix="convexp-ray-") as scratch:
        parent = Path(scratch) / task.folder.parent.name  # the study's own name: children record it
        folder = parent / task.name
        replace_folder(folder, files)
        here = dataclasses.replace(task, kwargs={**task.kwargs, "parent": parent})
        reason = None
        try:
            here.run(reporter, data=splits)
        except UnusableCheckpoint as exc:
            reporter.line(f"failed: {exc}")
            reason = str(exc).replace(str(parent), SCRATCH)
        except Exception as exc:  # recorded in the child's summary.json (a bug: in its log); its files come back all the same
            reporter.line(f"failed: {type(exc).__name__}: {exc}")
        return folder_files(folder), reason


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path (none when it does not exist)."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def replace_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Make `folder` hold exactly `files`: each written atomically, and files not among them removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        write_atomic(folder / relative, data)
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and str(path.relative_to(folder)) not in files:
            path.unlink()

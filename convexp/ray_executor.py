"""A study's children as Ray tasks (`--executor ray`): on a cluster, or on a local Ray instance.

A Ray worker may be another machine that shares no disk with this one. So each child trains in
a scratch folder on its worker, seeded with the files its folder already had here (an
interrupted child goes on from its checkpoint); when it ends, every file of that folder comes
back and replaces the child's folder here. The study's data travels once through Ray's object
store (the `splits` argument) or, for `reproduce`'s steps, is read on the worker from the paths
in the step's config: those must exist there.

Each task asks Ray for `threads` CPUs (and one GPU with --device cuda) and is never retried,
so a child's numbers are those of one run. A worker that dies leaves its child failed with Ray's
reason; Ctrl-C cancels every task and leaves the children interrupted, resumable.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import torch

from convexp.console import Reporter
from convexp.errors import ConvexpError
from convexp.executor import ChildTask, Execution, OnEnd, OnStart, settle
from convexp.runs import write_atomic


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConvexpError("--executor ray needs Ray, an optional dependency: pip install -e '.[ray]' "
                           "(make setup installs it), or use --jobs N on this machine") from None
    return ray


def run_on_ray(tasks: list[ChildTask], execution: Execution, reporter: Reporter, seconds: dict[str, float],
               hooks: tuple[OnStart, OnEnd]) -> None:
    ray = import_ray()
    threads = execution.threads or 1
    remote = ray.remote(max_retries=0)(train_on_worker)
    splits_refs: dict[int, object] = {}
    limit = execution.jobs if execution.jobs > 0 else len(tasks)
    pending, running = list(tasks), {}  # ObjectRef -> (task, start time)
    reporter.line(f"running {len(tasks)} child run(s) as Ray tasks, {threads} CPU(s) each"
                  + (f", at most {limit} at once" if limit < len(tasks) else ""))
    started_here = False
    try:
        started_here = connect(ray, execution.ray_address, reporter)
        while pending or running:
            while pending and len(running) < limit:
                task = pending.pop(0)
                hooks[0](task)
                kwargs = dict(task.kwargs)
                splits = kwargs.pop("splits", None)
                if splits is not None and id(splits) not in splits_refs:  # into the object store once
                    splits_refs[id(splits)] = ray.put(splits)
                gpus = 1 if str(kwargs.get("device", "cpu")).startswith("cuda") else 0
                ref = remote.options(num_cpus=threads, num_gpus=gpus).remote(
                    ChildTask(task.name, task.folder, task.function, kwargs, task.work), threads,
                    folder_files(task.folder), splits_refs.get(id(splits)) if splits is not None else None)
                running[ref] = (task, time.perf_counter())
                reporter.line(f"[{task.name}] submitted to Ray")
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                task, started = running.pop(ref)
                try:
                    replace_folder(task.folder, ray.get(ref))
                    status = settle(task, 0)
                except ray.exceptions.RayError as exc:
                    status = settle(task, None, reason=f"its Ray task failed ({type(exc).__name__}: "
                                                       f"{str(exc).splitlines()[0][:200]}); `convexp resume` runs it again")
                seconds[task.name] = time.perf_counter() - started
                reporter.line(f"[{task.name}] {status} after {seconds[task.name]:.0f} s")
                hooks[1](task, seconds[task.name])
    except BaseException:  # Ctrl-C, or an error here: cancel what runs; what had finished is kept
        finished, _ = ray.wait(list(running), num_returns=len(running), timeout=0) if running else ([], [])
        for ref, (task, started) in running.items():
            if ref in finished:
                try:
                    replace_folder(task.folder, ray.get(ref))
                except ray.exceptions.RayError:
                    pass
            else:
                ray.cancel(ref, force=True)
            settle(task, None, stopped=True)
            seconds[task.name] = time.perf_counter() - started
            hooks[1](task, seconds[task.name])
        raise
    finally:
        if started_here:
            ray.shutdown()


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


def train_on_worker(task: ChildTask, threads: int, files: dict[str, bytes], splits=None) -> dict[str, bytes]:
    """On a Ray worker: the child trains in a scratch copy of its folder; returns every file of it."""
    torch.set_num_threads(threads)
    reporter = Reporter(quiet=True, prefix=f"[{task.name}] ")
    with tempfile.TemporaryDirectory(prefix="convexp-ray-") as scratch:
        parent = Path(scratch) / task.folder.parent.name  # the study's own name: children record it
        folder = parent / task.name
        replace_folder(folder, files)
        kwargs = {**task.kwargs, "parent": parent, **({"splits": splits} if splits is not None else {})}
        try:
            task.function(**kwargs, reporter=reporter)
        except Exception as exc:  # recorded in the child's summary.json (a bug: in its log); its files come back all the same
            reporter.line(f"failed: {type(exc).__name__}: {exc}")
        return folder_files(folder)


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

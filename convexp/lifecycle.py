"""A run's life, owned in one place: `open_run` starts it, routes Ctrl-C, and ends it honestly.

Whatever happens inside, summary.json ends with one status, set here and nowhere else:
completed, failed (with the error), or interrupted (Ctrl-C / SIGTERM, resumable with
`convexp resume`). Studies open their child runs through the same manager.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import signal
import socket
from collections.abc import Iterator
from typing import Any

import torch

from convexp import interrupts
from convexp.callbacks import watching
from convexp.config import dump_yaml, flatten, to_dict
from convexp.console import Reporter
from convexp.errors import ConvexpError, DiskFull, Diverged, UnusableCheckpoint
from convexp.loggers import close_loggers, open_loggers
from convexp.runs import RunFolder, environment, now, run_lock
from convexp.search import TrialPruned
from convexp.spec import Experiment
from convexp.train import CHECKPOINT


def configure_device(device: torch.device, deterministic: bool) -> None:
    if device.type == "cuda" and deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by cuBLAS for determinism
        torch.use_deterministic_algorithms(True)
        if torch.backends.cudnn.benchmark:  # written only when on: PyTorch's test harness locks these flags
            torch.backends.cudnn.benchmark = False


def run_experiment(experiment: Experiment, config, run: RunFolder, device: torch.device, reporter: Reporter,
                   execution: Any = None, **open_options) -> None:
    """The experiment's run() inside the run's life manager; what it returns joins summary.json.
    A study gets `execution` (convexp.execution.Execution: how to run its children; None: one
    after another, here)."""
    study = {"execution": execution} if experiment.study else {}
    with open_run(run, experiment.name, config, device, reporter, **open_options):
        run.update_summary(**(experiment.run(config, run, device, reporter, **study) or {}))


@contextlib.contextmanager
def open_run(run: RunFolder, command: str, config, device: torch.device, reporter: Reporter, name: str | None = None,
             parent: RunFolder | None = None, config_changed: bool = False, **fields) -> Iterator[RunFolder]:
    """The one owner of a run's status, for a new run folder, a resumed one, or a study's child.

    On entry: a new folder gets a `running` summary (with `fields`) and its config.yaml; one met
    again (resume) is set `running`, its last error forgotten, its config.yaml rewritten only when
    `config_changed`. A run of its own (not a child) holds the folder's lock, so two processes
    never train one folder. Inside: log.txt gets every
    reporter line, and Ctrl-C and SIGTERM raise KeyboardInterrupt. On exit the status is set
    once; exceptions go on up.
    """
    with (run_lock(run) if parent is None else contextlib.nullcontext()):
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            previous = run.read_summary()
            if previous.get("command"):  # met again: resumed (a stub left by a worker that died first is not)
                summary = {k: v for k, v in previous.items() if k not in ("error", "finished_at")}
                run.write_json("summary.json", {**summary, "status": "running", "resumed_at": now(),
                                                "device": str(device), "owner": owner, **fields})
                if config_changed:  # a search resumed with new limits: a later resume keeps them
                    run.write_text("config.yaml", dump_yaml(config))
            else:
                run.write_json("summary.json", {
                    "command": command, "name": name, "status": "running", "started_at": now(), "seed": config.seed,
                    "device": str(device), "owner": owner, **({"child_of": parent.path.name} if parent else {}),
                    **fields, **environment()})
                run.write_text("config.yaml", dump_yaml(config))
        except OSError as exc:
            raise disk_error(exc, run) from None
        configure_device(device, getattr(getattr(config, "train", None), "deterministic", False))
        with reporter.logging_to(run), interrupts_as_keyboard_interrupt():
            loggers: list = []
            try:
                loggers = open_loggers(run, command, config, parent, reporter)  # an unreachable MLflow fails it here
                with watching(*loggers):
                    yield run
            except KeyboardInterrupt:
                set_final(run, status="interrupted")
                if parent is None:
                    reporter.line(f"interrupted: continue with `convexp resume {run.path}`")
                raise
            except TrialPruned as exc:  # a search's pruner stopped it: neither failed nor completed
                set_final(run, status="pruned", pruned=str(exc), pruned_after_epoch=exc.epoch)
                raise
            except UnusableCheckpoint:
                # Nothing ran: the run is as resumable as before, once the file is moved aside.
                restore_summary(run, previous) if previous.get("command") else set_final(run, status="failed")
                raise
            except ConvexpError as exc:
                set_final(run, status="failed", error=str(exc), **({"diverged": True} if isinstance(exc, Diverged) else {}))
                raise
            except OSError as exc:
                error = disk_error(exc, run)
                set_final(run, status="failed", error=str(error))
                if isinstance(error, DiskFull):
                    raise error from None
                raise
            except BaseException as exc:
                memory = out_of_memory(exc, config)
                set_final(run, status="failed", error=str(memory) if memory else f"{type(exc).__name__}: {exc}")
                if memory is not None:
                    raise memory from None
                raise
            else:
                try:
                    run.update_summary(status="completed", finished_at=now())
                except OSError as exc:
                    raise disk_error(exc, run) from None
            finally:
                close_loggers(loggers, final_status(run))
        # A completed run needs no checkpoint; removed only now, so a kill before the status
        # said `completed` still finds it.
        (run.path / CHECKPOINT).unlink(missing_ok=True)
    if parent is None:
        reporter.line(f"run folder: {run.path}")


def final_status(run: RunFolder) -> str:
    try:
        return run.status or "failed"
    except ConvexpError:  # a damaged summary.json
        return "failed"


def set_final(run: RunFolder, **fields) -> None:
    """The final status, on the way out of a failure: a write that fails too must not hide the first error."""
    try:
        run.update_summary(finished_at=now(), **fields)
        if fields.get("error"):
            run.log(f"error: {fields['error']}")
    except (OSError, ConvexpError):  # disk full, or a damaged summary.json: it keeps its last state
        pass


def restore_summary(run: RunFolder, previous: dict) -> None:
    """summary.json back as it was before this attempt (a failed resume leaves no trace in it)."""
    try:
        run.write_json("summary.json", previous)
    except OSError:
        pass


def disk_error(exc: OSError, run: RunFolder) -> OSError | DiskFull:
    if exc.errno != errno.ENOSPC:
        return exc
    return DiskFull(f"the disk is full ({exc.filename or run.path}): free some space, then `convexp resume` "
                    "the run; it goes on from its last checkpoint")


# What makes a run's memory: the first of them its config has are named in the out-of-memory fix.
MEMORY_KEYS = ("model.channels", "model.widths", "train.batch_size", "train.eval_batch_size", "sweep.batch_sizes",
               "batch_sizes", "match_max_channels")


def out_of_memory(exc: BaseException, config=None) -> ConvexpError | None:
    """A network or batch too big for this machine, as one line naming the keys of this run's
    config that set its size: the CPU allocator raises a plain RuntimeError ("can't allocate
    memory"), CUDA an OutOfMemoryError."""
    if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)):
        asked = re.search(r"tried to allocate (\d+) bytes", str(exc))
        size = f" (asked for {int(asked.group(1)) / 2**30:.1f} GiB at once)" if asked else ""
        keys = set(flatten(to_dict(config))) if dataclasses.is_dataclass(config) else set(MEMORY_KEYS)
        lower = " / ".join(key for key in MEMORY_KEYS if key in keys) or "the sizes in the config"
        return ConvexpError(f"out of memory{size}: the network or batch is too large for this machine; lower {lower}")
    return None


def drop_repeated_signal(signum, frame) -> None:
    """A signal after the first, dropped. A Python handler rather than SIG_IGN: a signal already
    on its way when SIG_IGN is set makes CPython print "OSError: Signal 15 ignored due to race
    condition" (a Ctrl-C reaches a study's workers, then the study's own SIGTERM does)."""


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM both raise KeyboardInterrupt while a run works.

    SIGTERM is how schedulers stop jobs. SIGINT is set explicitly because a process started in
    the background by a non-interactive shell inherits it ignored, and Ctrl-C must still work.
    One signal is enough: a second (Ctrl-C pressed twice, or a study's driver stopping workers
    that Ctrl-C reached too) must not cut short the saving the first one started, at any level.
    """
    scopes = interrupts.state

    def handler(signum, frame):
        scopes["fired"] = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, drop_repeated_signal)
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, drop_repeated_signal if scopes["fired"] else handler)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    scopes["depth"] += 1
    try:
        yield
    finally:
        scopes["depth"] -= 1
        if scopes["depth"] == 0:
            scopes["fired"] = False
        if not scopes["fired"]:  # else an outer run is still saving: signals stay ignored
            for sig, old in previous.items():
                signal.signal(sig, old)

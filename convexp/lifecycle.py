"""A run's life, owned in one place: `open_run` starts it, routes Ctrl-C, and ends it honestly.

Whatever happens inside, summary.json ends with one status, set here and nowhere else:
completed, failed (with the error), or interrupted (Ctrl-C / SIGTERM, resumable with
`convexp resume`). Studies open their child runs through the same manager.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import re
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from convexp import interrupts
from convexp.config import dump_yaml, load_config
from convexp.console import Reporter
from convexp.errors import ConvexpError, DiskFull
from convexp.executor import SEQUENTIAL, Execution, auto_jobs, usable_cores
from convexp.runs import RunFolder, environment, now, run_lock
from convexp.train import CHECKPOINT


@dataclass
class RunOptions:
    """What every experiment command takes besides its config's keys."""

    config_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    device: str | None = None
    seed: int | None = None
    out: Path = Path("runs")
    name: str | None = None
    quiet: bool = False
    jobs: str | None = None  # studies: children at once, or "auto" (None: 1 here, Ray's choice on Ray)
    threads: int = 0  # studies: CPU threads per child (0: the cores divided among the jobs)
    executor: str = "local"  # studies: "local" or "ray"
    ray_address: str | None = None


def experiment_module(command: str) -> ModuleType:
    """convexp/experiments/<command>.py: its `Config` class and `run(config, run, device, reporter)`."""
    return importlib.import_module(f"convexp.experiments.{command.replace('-', '_')}")


def command_name(experiment: ModuleType) -> str:
    """convexp.experiments.train_mnist -> train-mnist"""
    return experiment.__name__.rsplit(".", 1)[1].replace("_", "-")


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConvexpError("--device cuda was asked for but no CUDA GPU is available: use --device cpu or auto")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def configure_device(device: torch.device, deterministic: bool) -> None:
    if device.type == "cuda" and deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by cuBLAS for determinism
        torch.use_deterministic_algorithms(True)
        if torch.backends.cudnn.benchmark:  # written only when on: PyTorch's test harness locks these flags
            torch.backends.cudnn.benchmark = False


def load_experiment_config(command: str, config_class: type, options: RunOptions):
    path = options.config_path
    if path is None:
        path = Path("configs") / f"{command}.yaml"
        if not path.is_file():  # never fall back to built-in defaults without a word
            raise ConvexpError(f"{path} not found: run convexp from the project folder (it holds configs/), "
                               "or pass --config FILE")
    overrides = list(options.overrides)
    if options.device is not None:
        overrides.append(f"device={options.device}")
    if options.seed is not None:
        overrides.append(f"seed={options.seed}")
    return load_config(config_class, path, overrides)


def execution_of(jobs: str | None, threads: int, device: torch.device, executor: str = "local",
                 ray_address: str | None = None) -> Execution:
    """--jobs N | auto, --threads T, --executor local | ray and --ray-address, checked: one line for a bad value."""
    if executor not in ("local", "ray"):
        raise ConvexpError(f"--executor {executor!r} must be local (worker processes here) or ray (Ray tasks)")
    if ray_address and executor != "ray":
        raise ConvexpError("--ray-address is for --executor ray: add it, or drop the address")
    if executor == "ray":
        from convexp.ray_executor import import_ray

        import_ray()  # missing: say so now, before any data is read
    if jobs is None:
        count = 0 if executor == "ray" else 1  # on Ray: as many at once as its resources allow
    elif jobs == "auto":
        count = auto_jobs(device.type)
    elif jobs.isdigit() and int(jobs) >= 1:
        count = int(jobs)
    else:
        raise ConvexpError(f"--jobs {jobs!r} must be a whole number of at least 1, or auto")
    if threads < 0:
        raise ConvexpError(f"--threads {threads} must be 1 or more (0: the cores divided among the jobs)")
    cores = usable_cores()
    if executor == "local" and threads > cores:
        raise ConvexpError(f"--threads {threads} is more than the {cores} core(s) this process may use: "
                           f"use at most {cores} (the cores are shared by the --jobs)")
    execution = Execution(jobs=count, threads=threads, executor=executor, ray_address=ray_address)
    busy = count * execution.threads_per_child()
    if executor == "local" and device.type == "cpu" and busy > cores:  # 2 processes x 2 threads on 2 cores: up to 10x slower
        raise ConvexpError(f"--jobs {count} x {execution.threads_per_child()} thread(s) each needs {busy} cores, more than "
                           f"the {cores} here, and oversubscribed PyTorch runs many times slower: use --jobs "
                           f"{max(1, cores // execution.threads_per_child())} or --jobs auto")
    return execution


def start(experiment: ModuleType, options: RunOptions, adjust: Callable | None = None) -> RunFolder:
    """Load and check the experiment's config (then `adjust` it: options composed as values),
    create the run folder, and call the experiment's run() in it."""
    config = load_experiment_config(command_name(experiment), experiment.Config, options)
    return launch(experiment, adjust(config) if adjust is not None else config, options)


def launch(experiment: ModuleType, config, options: RunOptions) -> RunFolder:
    """A new run folder for a checked config, and the experiment's run() in it."""
    device = resolve_device(config.device)
    execution = execution_of(options.jobs, options.threads, device, options.executor, options.ray_address)
    run = RunFolder.create(options.out, command_name(experiment), options.name)
    run_experiment(experiment, config, run, device, Reporter(quiet=options.quiet), execution, name=options.name)
    return run


def resume(run_dir: Path, quiet: bool = False, jobs: str | None = None, threads: int = 0, executor: str = "local",
           ray_address: str | None = None) -> RunFolder:
    run = RunFolder(run_dir)
    summary = run.read_summary() if run.path.is_dir() else {}
    if summary.get("child_of"):
        parent = run.path.parent
        raise ConvexpError(f"{run_dir} is one run of the study {parent}: resume the study, `convexp resume {parent}`")
    command = summary.get("command")
    if not command or not (run.path / "config.yaml").is_file():
        raise ConvexpError(f"{run_dir} is not a convexp run folder (no summary.json and config.yaml): pass a folder under runs/")
    if summary.get("status") == "completed":
        raise ConvexpError(f"{run_dir} already completed: nothing to resume; start a new run instead")
    experiment = experiment_module(command)
    config = load_config(experiment.Config, run.path / "config.yaml")
    device = resolve_device(config.device)
    execution = execution_of(jobs, threads, device, executor, ray_address)
    reporter = Reporter(quiet=quiet)
    reporter.line(f"resuming {command} in {run.path}")
    run_experiment(experiment, config, run, device, reporter, execution)
    return run


def run_experiment(experiment: ModuleType, config, run: RunFolder, device: torch.device, reporter: Reporter,
                   execution: Execution = SEQUENTIAL, **open_options) -> None:
    """The experiment's run() inside the run's life manager; what it returns joins summary.json.
    A study (its module says STUDY = True) gets `execution`: how to run its children."""
    study = {"execution": execution} if getattr(experiment, "STUDY", False) else {}
    with open_run(run, command_name(experiment), config, device, reporter, **open_options):
        run.update_summary(**(experiment.run(config, run, device, reporter, **study) or {}))


@contextlib.contextmanager
def open_run(run: RunFolder, command: str, config, device: torch.device, reporter: Reporter, name: str | None = None,
             parent: RunFolder | None = None, **fields) -> Iterator[RunFolder]:
    """The one owner of a run's status, for a new run folder, a resumed one, or a study's child.

    On entry: a new folder gets a `running` summary (with `fields`) and its config.yaml; one met
    again (resume) is set `running`, its last error forgotten. A run of its own (not a child)
    holds the folder's lock, so two processes never train one folder. Inside: log.txt gets every
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
            try:
                yield run
            except KeyboardInterrupt:
                set_final(run, status="interrupted")
                if parent is None:
                    reporter.line(f"interrupted: continue with `convexp resume {run.path}`")
                raise
            except ConvexpError as exc:
                set_final(run, status="failed", error=str(exc))
                raise
            except OSError as exc:
                error = disk_error(exc, run)
                set_final(run, status="failed", error=str(error))
                if isinstance(error, DiskFull):
                    raise error from None
                raise
            except BaseException as exc:
                memory = out_of_memory(exc)
                set_final(run, status="failed", error=str(memory) if memory else f"{type(exc).__name__}: {exc}")
                if memory is not None:
                    raise memory from None
                raise
            try:
                run.update_summary(status="completed", finished_at=now())
            except OSError as exc:
                raise disk_error(exc, run) from None
        # A completed run needs no checkpoint; removed only now, so a kill before the status
        # said `completed` still finds it.
        (run.path / CHECKPOINT).unlink(missing_ok=True)
    if parent is None:
        reporter.line(f"run folder: {run.path}")


def set_final(run: RunFolder, **fields) -> None:
    """The final status, on the way out of a failure: a write that fails too must not hide the first error."""
    try:
        run.update_summary(finished_at=now(), **fields)
        if fields.get("error"):
            run.log(f"error: {fields['error']}")
    except (OSError, ConvexpError):  # disk full, or a damaged summary.json: it keeps its last state
        pass


def disk_error(exc: OSError, run: RunFolder) -> OSError | DiskFull:
    if exc.errno != errno.ENOSPC:
        return exc
    return DiskFull(f"the disk is full ({exc.filename or run.path}): free some space, then `convexp resume` "
                    "the run; it goes on from its last checkpoint")


def out_of_memory(exc: BaseException) -> ConvexpError | None:
    """A network or batch too big for this machine, as one line: the CPU allocator raises a plain
    RuntimeError ("can't allocate memory"), CUDA an OutOfMemoryError."""
    if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)):
        asked = re.search(r"tried to allocate (\d+) bytes", str(exc))
        size = f" (asked for {int(asked.group(1)) / 2**30:.1f} GiB at once)" if asked else ""
        return ConvexpError(f"out of memory{size}: the network or batch is too large for this machine; "
                            "lower model.channels / model.widths or train.batch_size")
    return None


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
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, signal.SIG_IGN if scopes["fired"] else handler)
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

"""Start, run and close an experiment's run folder; resume an interrupted one.

Whatever happens inside an experiment, summary.json ends with an honest status: completed,
failed (with the error), or interrupted (Ctrl-C / SIGTERM, resumable with `convexp resume`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convexp.config import dump_yaml, load_config
from convexp.console import Reporter
from convexp.errors import ConvexpError
from convexp.experiments import EXPERIMENTS, Experiment
from convexp.runs import RunFolder, environment, now


@dataclass
class RunOptions:
    config_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    device: str | None = None
    seed: int | None = None
    out: Path = Path("runs")
    name: str | None = None
    quiet: bool = False


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
        torch.backends.cudnn.benchmark = False


def load_experiment_config(experiment: Experiment, options: RunOptions):
    overrides = list(options.overrides)
    if options.device is not None:
        overrides.append(f"device={options.device}")
    if options.seed is not None:
        overrides.append(f"seed={options.seed}")
    return load_config(experiment.config_class, options.config_path, overrides)


def start(command: str, options: RunOptions) -> RunFolder:
    """Load and check the config, then create the run folder and run the experiment in it."""
    experiment = EXPERIMENTS[command]
    config = load_experiment_config(experiment, options)
    device = resolve_device(config.device)
    run = RunFolder.create(options.out, command, options.name)
    open_run(run, command, config, device, options.name)
    execute(experiment, config, run, device, Reporter(quiet=options.quiet))
    return run


def open_run(run: RunFolder, command: str, config, device: torch.device, name: str | None = None) -> None:
    """Write what a new run folder starts with: the resolved config and a `running` summary."""
    run.write_text("config.yaml", dump_yaml(config))
    run.write_json(
        "summary.json",
        {"command": command, "name": name, "status": "running", "started_at": now(),
         "seed": config.seed, "device": str(device), **environment()},
    )


def resume(run_dir: Path, quiet: bool = False) -> RunFolder:
    run = RunFolder(run_dir)
    summary = run.read_summary() if run.path.is_dir() else {}
    command = summary.get("command")
    if command not in EXPERIMENTS or not (run.path / "config.yaml").is_file():
        raise ConvexpError(f"{run_dir} is not a convexp run folder (no summary.json and config.yaml): pass a folder under runs/")
    if summary.get("status") == "completed":
        raise ConvexpError(f"{run_dir} already completed: nothing to resume; start a new run instead")
    experiment = EXPERIMENTS[command]
    config = load_config(experiment.config_class, run.path / "config.yaml")
    device = resolve_device(config.device)
    run.update_summary(status="running", resumed_at=now(), device=str(device))
    reporter = Reporter(quiet=quiet)
    reporter.line(f"resuming {command} in {run.path}")
    execute(experiment, config, run, device, reporter)
    return run


def execute(experiment: Experiment, config, run: RunFolder, device: torch.device, reporter: Reporter) -> None:
    configure_device(device, getattr(getattr(config, "train", None), "deterministic", False))
    with reporter.logging_to(run), interrupts_as_keyboard_interrupt():
        try:
            headline = experiment.run(config, run, device, reporter) or {}
        except KeyboardInterrupt:
            run.update_summary(status="interrupted", finished_at=now())
            reporter.line(f"interrupted: continue with `convexp resume {run.path}`")
            raise
        except ConvexpError as exc:
            run.update_summary(status="failed", error=str(exc), finished_at=now())
            run.log(f"error: {exc}")
            raise
        except BaseException as exc:
            run.update_summary(status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=now())
            raise
    run.update_summary(status="completed", finished_at=now(), **headline)
    reporter.line(f"run folder: {run.path}")


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM both raise KeyboardInterrupt while a run works.

    SIGTERM is how schedulers stop jobs. SIGINT is set explicitly because a process started in
    the background by a non-interactive shell inherits it ignored, and Ctrl-C must still work.
    """

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

"""The application: what a command asks for, turned into a run. Options and configs are
checked here, before any run folder exists; then a new run (start, launch) or an interrupted
one (resume) goes to lifecycle.run_experiment, which owns its life.

Layers, imports pointing down only: cli -> application -> experiments -> lifecycle (a run's
life), execution (a study's children), train -> data, models, autograd, runs, config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convexp.config import derive, load_config
from convexp.console import Reporter
from convexp.errors import ConvexpError
from convexp.execution import Execution, auto_jobs, usable_cores
from convexp.experiments import spec
from convexp.lifecycle import run_experiment
from convexp.runs import RunFolder
from convexp.spec import Experiment


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


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConvexpError("--device cuda was asked for but no CUDA GPU is available: use --device cpu or auto")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def load_experiment_config(experiment: Experiment, options: RunOptions):
    """configs/<name>.yaml (or --config), with --set, --device and --seed, checked."""
    path = options.config_path
    if path is None:
        path = Path("configs") / f"{experiment.name}.yaml"
        if not path.is_file():  # never fall back to built-in defaults without a word
            raise ConvexpError(f"{path} not found: run convexp from the project folder (it holds configs/), "
                               "or pass --config FILE")
    overrides = list(options.overrides)
    if options.device is not None:
        overrides.append(f"device={options.device}")
    if options.seed is not None:
        overrides.append(f"seed={options.seed}")
    return load_config(experiment.config, path, overrides)


def execution_of(jobs: str | None, threads: int, device: torch.device, executor: str = "local",
                 ray_address: str | None = None) -> Execution:
    """--jobs N | auto, --threads T, --executor local | ray and --ray-address, checked: one line for a bad value."""
    if executor not in ("local", "ray"):
        raise ConvexpError(f"--executor {executor!r} must be local (worker processes here) or ray (Ray tasks)")
    if ray_address and executor != "ray":
        raise ConvexpError("--ray-address is for --executor ray: add it, or drop the address")
    if executor == "ray":
        from convexp.execution.ray_tasks import import_ray

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


def start(experiment: Experiment, options: RunOptions, changes: dict[str, Any] | None = None) -> RunFolder:
    """Load and check the experiment's config (with `changes`: its own flags, e.g. --match, laid
    over it through config.derive), create the run folder, and call the experiment's run() in it."""
    config = load_experiment_config(experiment, options)
    return launch(experiment, derive(config, changes) if changes else config, options)


def launch(experiment: Experiment, config, options: RunOptions) -> RunFolder:
    """A new run folder for a checked config, and the experiment's run() in it."""
    device = resolve_device(config.device)
    execution = execution_of(options.jobs, options.threads, device, options.executor, options.ray_address)
    run = RunFolder.create(options.out, experiment.name, options.name)
    run_experiment(experiment, config, run, device, Reporter(quiet=options.quiet), execution, name=options.name)
    return run


def resume(run_dir: Path, quiet: bool = False, jobs: str | None = None, threads: int = 0, executor: str = "local",
           ray_address: str | None = None, trials: int = 0, epoch_budget: int = 0, yes: bool = False) -> RunFolder:
    """An interrupted run carried on with the config it started with; a search may be given more
    (or fewer) trials or a new epoch budget, and then also goes on after it completed."""
    run = RunFolder(run_dir)
    summary = run.read_summary() if run.path.is_dir() else {}
    if summary.get("child_of"):
        parent = run.resume_folder()
        raise ConvexpError(f"{run_dir} is one run of the study {parent}: resume the study, `convexp resume {parent}`")
    command = summary.get("command")
    if not command or not (run.path / "config.yaml").is_file():
        raise ConvexpError(f"{run_dir} is not a convexp run folder (no summary.json and config.yaml): pass a folder under runs/")
    completed = summary.get("status") == "completed"
    extended = bool(trials or epoch_budget)
    if completed and not extended:
        raise ConvexpError(f"{run_dir} already completed: nothing to resume; start a new run instead")
    experiment = spec(command)
    config = load_config(experiment.config, run.path / "config.yaml")
    if extended:
        from convexp.experiments.sweep import check_points
        from convexp.experiments.sweep_search import extended_search

        config = extended_search(config, trials, epoch_budget, run_dir, completed, yes)
        check_points(config)  # every range's ends, before config.yaml takes the new limits
    device = resolve_device(config.device)
    execution = execution_of(jobs, threads, device, executor, ray_address)
    reporter = Reporter(quiet=quiet)
    limits = f" (search: {config.trials} trials, epoch budget {config.epoch_budget or 'none'})" if extended else ""
    reporter.line(f"resuming {command} in {run.path}{limits}")
    run_experiment(experiment, config, run, device, reporter, execution, config_changed=extended)
    return run



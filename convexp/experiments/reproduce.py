"""`convexp reproduce`: the whole study at the report's settings, into one parent folder.

Each step starts from that experiment's own configs/<command>.yaml (the report's settings live
there, once); the data, seeds and conv of this run are laid over it as values
(`dataclasses.replace`), and the step runs as a child run folder. Every comparison runs once per
seed. On resume, finished steps are kept and the rest continue.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convexp.config import ReproduceConfig, load_config
from convexp.console import Reporter
from convexp.errors import ConvexpError
from convexp.executor import SEQUENTIAL, ChildTask, Execution, run_children
from convexp.experiments.common import finish_study, run_experiment_child
from convexp.lifecycle import experiment_module
from convexp.progress import StudyProgress, conv_net_macs, duration
from convexp.runs import RunFolder
from convexp.varres import build_varres, warm_cache

Config = ReproduceConfig  # what `convexp reproduce` reads from configs/reproduce.yaml
STUDY = True  # its steps can run in parallel (--jobs)


@dataclass(frozen=True)
class Step:
    name: str  # the child folder
    question: str  # the report's question it answers
    command: str
    config: Any  # the step's typed config, complete


def base_config(command: str, config: ReproduceConfig, file: str | None = None) -> Any:
    """configs_dir/<command>.yaml (or configs_dir/<file>) as `command`'s config."""
    name = file or f"{command}.yaml"
    path = Path(config.configs_dir) / name
    if not path.is_file():
        beyond = " (or --set beyond=false to skip the varres-best steps)" if file else ""
        raise ConvexpError(f"configs_dir={config.configs_dir!r} holds no {name}: run from the project "
                           f"folder or set configs_dir to the project's configs/ folder{beyond}")
    return load_config(experiment_module(command).Config, path)


def augmented(step_config: Any, enabled: bool) -> Any:
    return dataclasses.replace(step_config, augment=dataclasses.replace(step_config.augment, enabled=enabled))


def with_train(step_config: Any, **changes) -> Any:
    return dataclasses.replace(step_config, train=dataclasses.replace(step_config.train, **changes))


def fast_dev_run(step_config: Any) -> Any:
    """One epoch of 5 batches, and each evaluation on 5 batches of the same size per resolution."""
    train = step_config.train
    return with_train(step_config, epochs=1, max_batches=5, warmup_epochs=0.0, eval_batch_size=train.batch_size,
                      max_eval_batches=5)


def steps(config: ReproduceConfig, varres_root: Path, device: torch.device) -> list[Step]:
    """Every step of the study, in order, each with its complete config."""
    seeds = config.seeds[:1] if config.fast_dev_run else config.seeds

    def mnist(command: str, seed: int = 0) -> Any:
        base = base_config(command, config)
        data = dataclasses.replace(base.data, root=config.mnist_root, download=config.download, val_split=config.val_split)
        return dataclasses.replace(base, seed=seed, device=device.type, data=data,
                                   model=dataclasses.replace(base.model, conv=config.conv))

    def varres(command: str, seed: int = 0, file: str | None = None) -> Any:
        base = base_config(command, config, file)
        return dataclasses.replace(base, seed=seed, device=device.type,
                                   data=dataclasses.replace(base.data, root=str(varres_root)),
                                   model=dataclasses.replace(base.model, conv=config.conv))

    def final(step_config: Any) -> Any:
        return with_train(step_config, epochs=config.final.epochs, lr=config.final.lr)

    count = base_config("count-params", config)
    plan = [Step("count-params", "Q15", "count-params",
                 dataclasses.replace(count, device=device.type, conv=config.conv, match=True))]
    # Seed by seed: each round answers every question once, so a study cut short still covers them all.
    for seed in seeds:
        sweep = mnist("sweep-batch", seed)
        pool = varres("varres-pool", seed)
        final_pool = final(pool)
        plan += [
            Step(f"train-mnist-seed{seed}", "Q7", "train-mnist", mnist("train-mnist", seed)),
            Step(f"sweep-batch-seed{seed}", "Q8", "sweep-batch",
                 dataclasses.replace(sweep, sweep=dataclasses.replace(sweep.sweep, seeds=[seed]))),
            *(Step(f"augment-{'on' if on else 'off'}-seed{seed}", "Q9", "augment", augmented(mnist("augment", seed), on))
              for on in (True, False)),
            Step(f"varres-resize-seed{seed}", "Q12", "varres-resize", varres("varres-resize", seed)),
            Step(f"varres-pool-seed{seed}", "Q16", "varres-pool", dataclasses.replace(pool, seeds=[seed])),
            Step(f"final-resize-seed{seed}", "Q17", "varres-resize", final(varres("varres-resize", seed))),
            Step(f"final-pool-seed{seed}", "Q17", "varres-pool",
                 dataclasses.replace(final_pool, seeds=[seed], model=dataclasses.replace(final_pool.model, pooling=["max"]))),
        ]
        if config.beyond:
            best = varres("varres-pool", seed, file="varres-best.yaml")
            plan.append(Step(f"varres-best-seed{seed}", "beyond", "varres-pool", dataclasses.replace(best, seeds=[seed])))
    if config.fast_dev_run:  # the pipeline, not the numbers: every loop runs 5 batches of the step's size
        plan = [dataclasses.replace(s, config=fast_dev_run(s.config)) if hasattr(s.config, "train") else s for s in plan]
    return plan


# -- planned work, for the ETA ----------------------------------------------------------------------


def children(step: Step) -> int:
    if step.command == "sweep-batch":
        return len(step.config.sweep.batch_sizes) * len(step.config.sweep.seeds)
    if step.command == "varres-pool":
        return len(step.config.model.pooling) * len(step.config.seeds)
    return 1


def training_images(step: Step) -> int:
    """About how many images one epoch of the step trains on (read from file headers and listings)."""
    from convexp.data import validation_count

    data = step.config.data
    if hasattr(data, "val_split"):
        labels = Path(data.root) / "MNIST" / "raw" / "train-labels-idx1-ubyte"
        try:
            with labels.open("rb") as f:
                total = struct.unpack(">II", f.read(8))[1]
            total -= validation_count(data.val_split, total)
        except (OSError, struct.error, ConvexpError):
            total = 50_000  # not there yet (downloaded later) or broken: the run itself will say so
    else:
        total = round(sum(1 for _ in Path(data.root).glob("train/*/*.png")) * (1 - data.val_fraction)) or 48_000
    if step.config.train.max_batches:
        total = min(total, step.config.train.max_batches * step.config.train.batch_size)
    return total


def planned_work(step: Step) -> tuple[float, int]:
    """(multiply-adds of all training epochs, epochs of all children) for one step."""
    if not hasattr(step.config, "train"):
        return 0.0, 0
    epochs = children(step) * step.config.train.epochs
    if step.command == "varres-pool":
        resolutions = step.config.data.resolutions
        model = step.config.model
        per_image = sum(conv_net_macs(model.channels, r, tuple(model.widths)) for r in resolutions) / len(resolutions)
    else:
        per_image = conv_net_macs(64, 28)
    return float(epochs * training_images(step) * per_image), epochs


# -- the study ------------------------------------------------------------------------------------


def varres_folder(config: ReproduceConfig, run: RunFolder, reporter: Reporter) -> Path:
    if config.varres_root != "build":
        return Path(config.varres_root)
    root = run.path / "mnist-varres"
    if not root.is_dir():
        reporter.line(f"[make-varres] building mnist-varres from {config.mnist_root} into {root}")
        build_varres(Path(config.mnist_root), root, seed=config.varres_seed, download=config.download)
    return root


def run(config: ReproduceConfig, run: RunFolder, device: torch.device, reporter: Reporter,
        execution: Execution = SEQUENTIAL) -> dict:
    varres_root = varres_folder(config, run, reporter)
    plan = steps(config, varres_root, device)
    planned = {step.name: planned_work(step) for step in plan}
    progress = StudyProgress({n: w for n, (w, _) in planned.items()}, {n: e for n, (_, e) in planned.items()})
    seconds: dict[str, float] = dict(run.read_summary().get("step_seconds", {}))
    number = {step.name: f"[{index}/{len(plan)}] {step.question} {step.name}" for index, step in enumerate(plan, start=1)}
    tasks = []
    for step in plan:
        if run.child(step.name).status == "completed":
            progress.keep(step.name)
            reporter.line(f"{number[step.name]}: completed earlier, kept")
            continue
        tasks.append(ChildTask(step.name, run.path / step.name, run_experiment_child, work=planned[step.name][0],
                               epochs=planned[step.name][1], kwargs={
            "parent": run.path, "name": step.name, "command": step.command, "config": step.config,
            "question": step.question, "device": str(device)}))

    def started(task: ChildTask) -> None:
        progress.begin(task.name)
        command = task.kwargs["command"]
        reporter.line(f"{number[task.name]}: convexp {command} | {progress.describe()}")

    def ended(task: ChildTask, spent: float) -> None:
        progress.end(task.name)
        seconds[task.name] = round(seconds.get(task.name, 0.0) + spent, 1)
        run.update_summary(step_seconds=seconds)

    if any(task.kwargs["command"].startswith("varres") for task in tasks):
        warm_cache(varres_root)
    reporter.study = progress if execution.in_this_process else None  # epoch lines say where the study stands
    wall = time.perf_counter()
    try:
        run_children(tasks, execution, reporter, on_start=started, on_end=ended)
    finally:
        reporter.study = None
    wall_seconds = round(time.perf_counter() - wall, 1)
    show_step_times(reporter, plan, seconds)
    at_once = f"{execution.jobs} step(s) at once" if execution.jobs else "as many steps at once as Ray allowed"
    reporter.line(f"this session: {duration(wall_seconds)} wall clock, {at_once} ({execution.executor})")
    failed = [step.name for step in plan if run.child(step.name).status != "completed"]
    headline = {"steps": [s.name for s in plan], "questions": {s.name: s.question for s in plan},
                "fast_dev_run": config.fast_dev_run, "step_seconds": seconds, "total_seconds": round(sum(seconds.values()), 1),
                "wall_seconds": wall_seconds, "jobs": execution.jobs, "executor": execution.executor}
    return finish_study(run, headline, failed, len(plan))


def show_step_times(reporter: Reporter, plan: list[Step], seconds: dict[str, float]) -> None:
    rows = [[s.question, s.name, s.command, f"{seconds.get(s.name, 0):.0f}", duration(seconds.get(s.name, 0))] for s in plan]
    total = sum(seconds.values())
    rows.append(["", "total", "", f"{total:.0f}", duration(total)])
    reporter.table("reproduce: time per step", ["question", "step", "command", "seconds", "time"], rows)

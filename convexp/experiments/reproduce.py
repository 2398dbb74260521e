"""`convexp reproduce`: the whole study at the report's settings, into one parent folder.

The study is a list of steps, as data (STEPS): which experiment answers which question, from
which of configs/ (where the report's settings live, once), with which changes. Each step's
config is its experiment's config file with this study's data, seed, device and conv laid over
it through config.derive, and runs as a child run folder. Every comparison runs once per seed.
On resume, finished steps are kept and the rest continue.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from convexp.config import (
    Invalid,
    MnistData,
    RunConfig,
    derive,
    load_config,
    require_float32,
    require_positive,
    require_seed,
    require_seeds,
    require_val_split,
)
from convexp.errors import ConvexpError
from convexp.spec import Experiment, Flag

if TYPE_CHECKING:
    import torch

    from convexp.console import Reporter
    from convexp.execution import Execution
    from convexp.runs import RunFolder


@dataclass
class FinalComparison:
    """Question 17: both varres networks trained longer, at the report's tuned learning rate."""

    epochs: int = 15
    lr: float = 0.0009

    def __post_init__(self):
        require_positive("epochs", self.epochs)
        require_positive("lr", self.lr)
        require_float32("lr", self.lr)


@dataclass
class ReproduceConfig(RunConfig):
    # `seed`: unused, the steps take theirs from `seeds`
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    mnist_root: str = "auto"  # see convexp/data_roots.py
    val_split: float = 10000  # MNIST validation digits (the report's 50,000 / 10,000); 0.2 on mnist-mini
    download: bool = True
    # The course's mnist-varres; `build`: make one from mnist_root (seeded by varres_seed).
    varres_root: str = "auto"
    varres_seed: int = 0
    conv: Literal["native", "unfold", "unfold-reference"] = "native"
    # train.precision of every training step (fp32 | bf16 | auto, see convexp/precision.py):
    # the study under bf16 is how its verdicts are checked against fp32's.
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    # Which of the report's questions to run (part1, Q7, Q8, Q9, Q12, Q15, Q16, Q17, beyond);
    # empty: all of them. A study of some questions costs only theirs (e.g. [Q7, Q16, Q17]).
    questions: list[str] = field(default_factory=list)
    final: FinalComparison = field(default_factory=FinalComparison)
    configs_dir: str = "configs"  # each step starts from its own configs/<command>.yaml
    fast_dev_run: bool = False  # one seed, one epoch of a few batches per run: checks the pipeline
    # Beyond the report: also train configs_dir/varres-best.yaml once per seed, the network that
    # `convexp sweep` found to beat the report's 98.89% within its parameter budget. Off unless
    # asked (configs/reproduce.yaml asks), so a study begun before the key existed resumes as it was.
    beyond: bool = False

    def __post_init__(self):
        super().__post_init__()
        require_seeds("seeds", self.seeds)
        require_seed("varres_seed", self.varres_seed)
        require_val_split("val_split", self.val_split)
        known = list(dict.fromkeys(plan.question for plan in STEPS))
        unknown = [q for q in self.questions if q not in known]
        if unknown:
            raise Invalid("questions", f"{{key}} names {', '.join(map(str, unknown))}, which the study does not "
                                       f"answer: choose from {', '.join(known)} (or [] for all)")
        if "beyond" in self.questions and not self.beyond:
            raise Invalid("questions", "{key} asks for 'beyond', which runs only with beyond: true: set both")

    def with_data_roots(self) -> ReproduceConfig:
        """`auto` roots resolved (data_roots.py); with no mnist-varres anywhere, varres_root
        `auto` becomes `build`: one is made from mnist_root."""
        from convexp.data_roots import resolve_root

        varres_root = self.varres_root
        if varres_root != "build":
            varres_root = resolve_root(varres_root, "mnist-varres")
            if self.varres_root == "auto" and not (Path(varres_root) / "train").is_dir():
                varres_root = "build"
        return dataclasses.replace(self, mnist_root=resolve_root(self.mnist_root, "mnist"), varres_root=varres_root)


@dataclass(frozen=True)
class StepPlan:
    """One step of the study: `experiment` run from configs_dir/`file` with `changes`."""

    name: str  # its child folder; steps run per seed get "-seed<S>" added
    question: str  # the report's question it answers
    experiment: str
    data: str = ""  # "mnist" or "varres": which of the study's data it trains on
    file: str = ""  # default: <experiment>.yaml
    changes: dict[str, Any] = field(default_factory=dict)
    conv_key: str = "model.conv"  # the key that takes the study's conv ("": the step has none)
    seeds_key: str = ""  # a study step's key listing its seeds: set to [this round's seed]
    final: bool = False  # question 17's longer training at the report's tuned learning rate (config.final)
    per_seed: bool = True
    beyond: bool = False  # run only when config.beyond asks


# Seed by seed: each round answers every question once, so a study cut short still covers them all.
STEPS = [
    StepPlan("part1", "part1", "gradcheck", conv_key="", per_seed=False),  # both conv layouts, whatever `conv` is
    StepPlan("count-params", "Q15", "count-params", changes={"match": True}, conv_key="conv", per_seed=False),
    StepPlan("train-mnist", "Q7", "train-mnist", "mnist"),
    StepPlan("sweep-batch", "Q8", "sweep-batch", "mnist", seeds_key="sweep.seeds"),
    StepPlan("augment-on", "Q9", "augment", "mnist", changes={"augment.enabled": True}),
    StepPlan("augment-off", "Q9", "augment", "mnist", changes={"augment.enabled": False}),
    StepPlan("varres-resize", "Q12", "varres-resize", "varres"),
    StepPlan("varres-pool", "Q16", "varres-pool", "varres", seeds_key="seeds"),
    StepPlan("final-resize", "Q17", "varres-resize", "varres", final=True),
    StepPlan("final-pool", "Q17", "varres-pool", "varres", changes={"model.pooling": ["max"]}, seeds_key="seeds", final=True),
    StepPlan("varres-best", "beyond", "varres-pool", "varres", file="varres-best.yaml", seeds_key="seeds", beyond=True),
]


@dataclass(frozen=True)
class Step:
    name: str  # the child folder
    question: str  # the report's question it answers
    experiment: Experiment
    config: Any  # the step's typed config, complete


def base_config(plan: StepPlan, config: ReproduceConfig) -> Any:
    """configs_dir/<file> as the step's experiment's config."""
    from convexp.experiments import spec

    name = plan.file or f"{plan.experiment}.yaml"
    path = Path(config.configs_dir) / name
    if not path.is_file():
        beyond = " (or --set beyond=false to skip the varres-best steps)" if plan.beyond else ""
        raise ConvexpError(f"configs_dir={config.configs_dir!r} holds no {name}: run from the project "
                           f"folder or set configs_dir to the project's configs/ folder{beyond}")
    return load_config(spec(plan.experiment).config, path)


def step_changes(plan: StepPlan, config: ReproduceConfig, seed: int, varres_root: Path, device: str) -> dict[str, Any]:
    """What the study lays over the step's own config: its data, seed, device and conv."""
    conv = {plan.conv_key: config.conv} if plan.conv_key else {}
    if not plan.data:  # part1, count-params: no data, and their own seed
        return {"device": device, **conv, **plan.changes}
    changes = {"seed": seed, "device": device, "train.precision": config.precision, **conv}
    if plan.data == "mnist":
        changes |= {"data.root": config.mnist_root, "data.download": config.download, "data.val_split": config.val_split}
    else:
        changes |= {"data.root": str(varres_root)}
    if plan.seeds_key:
        changes[plan.seeds_key] = [seed]
    if plan.final:
        changes |= {"train.epochs": config.final.epochs, "train.lr": config.final.lr}
    return changes | plan.changes


def fast_dev_run(step_config: Any) -> Any:
    """One epoch of 5 batches, and each evaluation on 5 batches of the same size per resolution."""
    return derive(step_config, {"train.epochs": 1, "train.max_batches": 5, "train.warmup_epochs": 0.0,
                                "train.eval_batch_size": step_config.train.batch_size, "train.max_eval_batches": 5})


def steps(config: ReproduceConfig, varres_root: Path, device: torch.device) -> list[Step]:
    """Every step of the study, in order, each with its complete config."""
    from convexp.experiments import spec

    seeds = config.seeds[:1] if config.fast_dev_run else config.seeds
    plans = [p for p in STEPS if (config.beyond or not p.beyond) and (not config.questions or p.question in config.questions)]
    rounds = [(p, None) for p in plans if not p.per_seed] + [(p, s) for s in seeds for p in plans if p.per_seed]
    plan = []
    for step, seed in rounds:
        step_config = derive(base_config(step, config), step_changes(step, config, seed or 0, varres_root, device.type))
        if config.fast_dev_run and hasattr(step_config, "train"):  # the pipeline, not the numbers
            step_config = fast_dev_run(step_config)
        name = step.name if seed is None else f"{step.name}-seed{seed}"
        plan.append(Step(name, step.question, spec(step.experiment), step_config))
    return plan


# -- planned work, for the ETA ----------------------------------------------------------------------


def training_images(step: Step) -> int:
    """About how many images one epoch of the step trains on (read from file headers and listings)."""
    from convexp.data import validation_count

    data = step.config.data
    if isinstance(data, MnistData):
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
    if step.experiment.macs_per_image is None:
        return 0.0, 0
    epochs = step.experiment.children(step.config) * step.config.train.epochs
    return float(epochs * training_images(step) * step.experiment.macs_per_image(step.config)), epochs


# -- the study ------------------------------------------------------------------------------------


def varres_folder(config: ReproduceConfig, run: RunFolder, reporter: Reporter) -> Path:
    from convexp.varres import build_varres

    if config.varres_root != "build":
        return Path(config.varres_root)
    root = run.path / "mnist-varres"
    if not root.is_dir():
        reporter.line(f"[make-varres] building mnist-varres from {config.mnist_root} into {root}")
        build_varres(Path(config.mnist_root), root, seed=config.varres_seed, download=config.download,
                     root_option="mnist_root (--set mnist_root=PATH)")
    return root


def run(config: ReproduceConfig, run: RunFolder, device: torch.device, reporter: Reporter,
        execution: Execution | None = None) -> dict:
    from convexp.callbacks import watching
    from convexp.config import VarresData
    from convexp.execution import SEQUENTIAL, ChildTask, run_children
    from convexp.experiments.common import finish_study, run_experiment_child
    from convexp.progress import StudyProgress, duration
    from convexp.varres import warm_cache

    execution = execution or SEQUENTIAL
    varres_root = varres_folder(config, run, reporter)
    plan = steps(config, varres_root, device)
    planned = {step.name: planned_work(step) for step in plan}
    progress = StudyProgress({n: w for n, (w, _) in planned.items()}, {n: e for n, (_, e) in planned.items()})
    seconds: dict[str, float] = dict(run.read_summary().get("step_seconds", {}))
    number = {step.name: f"[{index}/{len(plan)}] {step.question} {step.name}" for index, step in enumerate(plan, start=1)}
    tasks = []
    for step in plan:
        if run.child_status(step.name) == "completed":
            progress.keep(step.name)
            reporter.line(f"{number[step.name]}: completed earlier, kept")
            continue
        tasks.append(ChildTask(step.name, run.path / step.name, run_experiment_child, work=planned[step.name][0],
                               epochs=planned[step.name][1], device=str(device), kwargs={
            "parent": run.path, "name": step.name, "command": step.experiment.name, "config": step.config,
            "question": step.question}))

    def started(task: ChildTask) -> None:
        progress.begin(task.name)
        command = task.kwargs["command"]
        reporter.line(f"{number[task.name]}: convexp {command} | {progress.describe()}")

    def ended(task: ChildTask, spent: float) -> None:
        progress.end(task.name)
        seconds[task.name] = round(seconds.get(task.name, 0.0) + spent, 1)
        run.update_summary(step_seconds=seconds)

    if any(isinstance(getattr(task.kwargs["config"], "data", None), VarresData) for task in tasks):
        warm_cache(varres_root)
    wall = time.perf_counter()
    with watching(progress):  # the epoch lines of steps trained here say where the study stands
        run_children(tasks, execution, reporter, on_start=started, on_end=ended)
    wall_seconds = round(time.perf_counter() - wall, 1)
    show_step_times(reporter, plan, seconds)
    at_once = f"{execution.jobs} step(s) at once" if execution.jobs else "as many steps at once as Ray allowed"
    reporter.line(f"this session: {duration(wall_seconds)} wall clock, {at_once} ({execution.executor})")
    failed = [step.name for step in plan if run.child_status(step.name) != "completed"]
    headline = {"steps": [s.name for s in plan], "questions": {s.name: s.question for s in plan},
                "fast_dev_run": config.fast_dev_run, "step_seconds": seconds, "total_seconds": round(sum(seconds.values()), 1),
                "wall_seconds": wall_seconds, "jobs": execution.jobs, "executor": execution.executor}
    return finish_study(run, headline, failed, len(plan))


def show_step_times(reporter: Reporter, plan: list[Step], seconds: dict[str, float]) -> None:
    from convexp.progress import duration

    rows = [[s.question, s.name, s.experiment.name, f"{seconds.get(s.name, 0):.0f}", duration(seconds.get(s.name, 0))] for s in plan]
    total = sum(seconds.values())
    rows.append(["", "total", "", f"{total:.0f}", duration(total)])
    reporter.table("reproduce: time per step", ["question", "step", "command", "seconds", "time"], rows)


def step_count(summary: dict) -> str | None:
    """`convexp runs`: how many steps the study has."""
    if "steps" not in summary:
        return None
    return f"{len(summary['steps'])} steps" + (" (fast dev run)" if summary.get("fast_dev_run") else "")


SPEC = Experiment(
    name="reproduce",
    help="Run the whole study (every experiment, several seeds) into one parent run folder.",
    config=ReproduceConfig,
    run=run,
    study=True,
    holds_steps=True,
    seed_option=False,
    flags=(Flag("--fast-dev-run", "fast_dev_run", "One seed; each run trains one epoch of 5 batches and evaluates "
                                                   "5 batches: a pipeline check."),),
    key_metric=step_count,
)

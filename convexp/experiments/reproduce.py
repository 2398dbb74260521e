"""`convexp reproduce`: the whole study at the report's settings, into one parent folder.

Each step starts from that experiment's own configs/<command>.yaml (the report's settings live
there, once), with the data, seeds and conv of this run laid over it, and runs as a child run
folder. Steps compared across settings get several seeds. On resume, finished steps are kept
and the rest continue.
"""

from __future__ import annotations

from pathlib import Path

import torch

from convexp.config import ReproduceConfig, load_config
from convexp.console import Reporter
from convexp.experiments import EXPERIMENTS
from convexp.runs import RunFolder
from convexp.varres import build_varres

FAST = ["train.epochs=1", "train.max_batches=5"]  # --fast-dev-run: the pipeline, not the numbers


def steps(config: ReproduceConfig, varres_root: Path) -> list[tuple[str, str, list[str]]]:
    """(child name, command, overrides) for every experiment of the study, in order."""
    seeds = config.seeds[:1] if config.fast_dev_run else config.seeds
    seed_list = f"[{', '.join(map(str, seeds))}]"
    mnist = [f"data.root={config.mnist_root}", f"data.download={str(config.download).lower()}", f"model.conv={config.conv}"]
    varres = [f"data.root={varres_root}", f"model.conv={config.conv}"]
    plan = [("train-mnist", "train-mnist", mnist),
            ("sweep-batch", "sweep-batch", mnist + [f"sweep.seeds={seed_list}"])]
    for seed in seeds:
        for enabled in ("on", "off"):
            plan.append((f"augment-{enabled}-seed{seed}", "augment",
                         mnist + [f"seed={seed}", f"augment.enabled={str(enabled == 'on').lower()}"]))
    plan += [(f"varres-resize-seed{seed}", "varres-resize", varres + [f"seed={seed}"]) for seed in seeds]
    plan.append(("varres-pool", "varres-pool", varres + [f"seeds={seed_list}"]))
    plan.append(("count-params", "count-params", ["match=true", f"conv={config.conv}"]))
    if config.fast_dev_run:
        plan = [(name, command, overrides + (FAST if command != "count-params" else [])) for name, command, overrides in plan]
    return plan


def run(config: ReproduceConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    from convexp.lifecycle import execute, open_run

    varres_root = run.path / "mnist-varres"
    if not varres_root.is_dir():
        reporter.line(f"[make-varres] building mnist-varres from {config.mnist_root} into {varres_root}")
        build_varres(Path(config.mnist_root), varres_root, seed=config.varres_seed)
    plan = steps(config, varres_root)
    for index, (name, command, overrides) in enumerate(plan, start=1):
        child = run.child(name)
        status = child.status
        if status == "completed":
            reporter.line(f"[{index}/{len(plan)}] {name}: completed earlier, kept")
            continue
        experiment = EXPERIMENTS[command]
        config_file = Path(config.configs_dir) / f"{command}.yaml"
        step_config = load_config(experiment.config_class, config_file if config_file.is_file() else None,
                                  overrides + [f"device={device.type}"])
        reporter.line(f"[{index}/{len(plan)}] {name}: convexp {command} " + " ".join(f"--set {o}" for o in overrides))
        if status is None:
            open_run(child, command, step_config, device, name)
        else:
            child.update_summary(status="running")
        execute(experiment, step_config, child, device, reporter)
    return {"steps": [name for name, _, _ in plan], "fast_dev_run": config.fast_dev_run}

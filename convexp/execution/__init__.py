"""Where a study's child runs execute: one after another here, or several at once in worker
processes (workers.py) or as Ray tasks (ray_tasks.py), through one scheduling loop (loop.py)."""

from convexp.execution.loop import run_children
from convexp.execution.task import (
    SEQUENTIAL,
    ChildTask,
    Execution,
    auto_jobs,
    usable_cores,
)

__all__ = ["SEQUENTIAL", "ChildTask", "Execution", "auto_jobs", "run_children", "usable_cores"]

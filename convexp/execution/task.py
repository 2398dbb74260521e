"""What a study hands to the execution of its children: the tasks, and how to run them.

A study (sweep-batch, varres-pool, reproduce, sweep) hands over its unfinished children as
`ChildTask`s. Each task trains one child into its own folder under the study and records there
how it ended, through lifecycle.open_run like any run; the study then reads every child back
from its folder, so aggregation is the same whichever way the children ran.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convexp.errors import ConvexpError
from convexp.runs import RunFolder


@dataclass(frozen=True)
class Execution:
    """How a study runs its children: `jobs` at once, `threads` CPU threads each (0: the cores
    divided among the jobs), here ("local") or as Ray tasks ("ray", at `ray_address` or on a
    local Ray instance; there jobs 0 leaves how many run at once to Ray's scheduler)."""

    jobs: int = 1
    threads: int = 0
    executor: str = "local"
    ray_address: str | None = None

    def threads_per_child(self) -> int:
        return self.threads or max(1, usable_cores() // max(1, self.jobs))

    @property
    def in_this_process(self) -> bool:
        """Children train here, one after another (not in workers): they can share this process's tensors."""
        return self.executor == "local" and self.jobs <= 1


SEQUENTIAL = Execution()


def usable_cores() -> int:
    """Cores this process may run on (taskset, cgroups, Slurm), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_jobs(device_type: str) -> int:
    """--jobs auto: one child per core on the CPU (two threads beat one by only 1.2-1.6x here);
    on a GPU one per two cores, each feeding the GPU from its own Python process."""
    cores = usable_cores()
    return max(1, cores if device_type == "cpu" else cores // 2)


@dataclass(frozen=True)
class ChildTask:
    """One child run: `function(**kwargs, [device=...], [splits=...], reporter=...)` trains it into `folder`.

    `function` is defined at module level, so a worker process can import it by name; kwargs are
    plain values and typed configs. What the child needs besides is declared: the `device` it
    trains on, and the `data` (a Splits on the CPU) it is handed as `splits`, which reaches a
    worker process through shared memory and a Ray worker through the object store, once for all
    tasks that share it. `work` orders parallel runs, largest first, so the last to start are short.
    """

    name: str
    folder: Path
    function: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)
    work: float = 0.0
    epochs: int = 0  # planned, of the child and its own children: for the live view
    device: str | None = None  # "cpu", "cuda", ...: passed as `device`
    data: Any = None  # passed as `splits`

    def run(self, reporter, data: Any = None) -> None:
        """Train the child here; `data` stands in for `self.data` where it came another way (Ray)."""
        needs = {"device": self.device} if self.device is not None else {}
        data = data if data is not None else self.data
        if data is not None:
            needs["splits"] = data
        self.function(**self.kwargs, **needs, reporter=reporter)


OnStart = Callable[[ChildTask], None]
OnEnd = Callable[[ChildTask, float], None]  # the task, and the seconds it took


def settle(task: ChildTask, exit_code: int | None, stopped: bool = False, reason: str | None = None) -> str:
    """The child's status once its worker has ended; one its dead worker left unfinished becomes
    failed (for `reason`, or the exit code's), or interrupted when the study stopped it (Ctrl-C, SIGTERM)."""
    from convexp.lifecycle import set_final

    child = RunFolder(task.folder)
    try:
        status = child.status
    except ConvexpError:  # a damaged summary.json: the child did not end well either
        status = None
    if status in ("completed", "failed", "interrupted", "pruned"):  # pruned: a search stopped it
        return status
    child.path.mkdir(parents=True, exist_ok=True)
    if stopped:
        set_final(child, status="interrupted", name=task.name)
        return "interrupted"
    reason = reason or worker_death(exit_code)
    set_final(child, status="failed", error=reason, name=task.name)
    return f"failed ({reason})"


def worker_death(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name
        why = "killed, or out of memory" if -exit_code == signal.SIGKILL else "stopped"
        return f"its worker process died of {name} ({why}) before the run ended; `convexp resume` runs it again"
    return f"its worker process exited with code {exit_code} before the run ended; `convexp resume` runs it again"

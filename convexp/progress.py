"""Where a long study stands: which step, which child, and when it will be done.

Each step's work is planned up front (child runs x epochs x training images x the network's
multiply-adds per image), so a step of cheap 28x28 epochs and one of 64x64 epochs weigh what
they cost. The ETA divides the work left by the rate measured in this session, so it corrects
itself as soon as the first epochs are done, whatever machine runs them.
"""

from __future__ import annotations

import time

from convexp.callbacks import Callback, EpochEnd


def conv_net_macs(last_channels: int, size: int, widths: tuple[int, ...] = (16, 32)) -> int:
    """Multiply-adds of the 3x3 conv blocks (1 -> widths... -> last) on one size x size image;
    each block's conv runs at the size its predecessors' pools left."""
    channels = [1, *widths, last_channels]
    return 9 * sum(channels[i] * channels[i + 1] * (size // 2**i) ** 2 for i in range(len(channels) - 1))


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class StudyProgress(Callback):
    """Where a whole study stands, in work done and time left: on the study's own lines, and on
    the line of every epoch its steps train in this process (a watcher of the training loop)."""

    def __init__(self, work: dict[str, float], epochs: dict[str, int]):
        """work[step]: planned cost in any unit; epochs[step]: epochs of all its children together."""
        self.work, self.epochs = work, epochs
        self.total = sum(work.values())
        self.kept = 0.0  # work of steps finished in an earlier session
        self.done = 0.0  # work done in this session
        self.step: str | None = None  # the step training in this process, whose epochs report here
        self.step_done: dict[str, float] = {}  # work done so far of each step begun (several at once with --jobs)
        self.started = time.perf_counter()

    def keep(self, step: str) -> None:
        self.kept += self.work[step]

    def begin(self, step: str) -> None:
        self.step = step
        self.step_done[step] = 0.0

    def on_epoch_end(self, event: EpochEnd) -> None:
        event.notes.append(self.epoch_finished())

    def epoch_finished(self) -> str:
        """Counts one more training epoch of the current step; returns the study's standing."""
        if self.step is not None:
            share = self.work[self.step] / max(1, self.epochs[self.step])
            share = min(share, self.work[self.step] - self.step_done[self.step])  # a resumed child may overrun
            self.step_done[self.step] += share
            self.done += share
        return self.describe()

    def end(self, step: str) -> None:
        """The step has ended (here or in a worker): whatever of its work was not counted yet, is."""
        self.done += self.work[step] - self.step_done.pop(step, 0.0)
        if self.step == step:
            self.step = None

    def eta_seconds(self) -> float | None:
        elapsed = time.perf_counter() - self.started
        if self.done <= 0 or elapsed <= 0:
            return None
        return (self.total - self.kept - self.done) * elapsed / self.done

    def describe(self) -> str:
        fraction = (self.kept + self.done) / self.total if self.total else 1.0
        eta = self.eta_seconds()
        elapsed = duration(time.perf_counter() - self.started)
        return f"study {fraction:.0%}, {elapsed} elapsed, ETA " + ("?" if eta is None else duration(eta))

"""Sweeps that search (`convexp sweep --space ... --sampler tpe --pruner median`): the ranges of
--space, the Optuna study kept in the sweep folder, and the watcher that prunes a hopeless trial.

The study is an Optuna journal file in the sweep folder (STUDY_FILE): worker processes report to
it while they train, `convexp resume` reads it back to go on where the search stopped, and
optuna-dashboard opens it. Optuna is imported only in the functions that use it; without it, a
search is one line naming what to install.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convexp.callbacks import Callback, EpochEnd
from convexp.config import parse_value
from convexp.errors import ConvexpError

STUDY_FILE = "optuna-journal.log"
STUDY_NAME = "sweep"
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")
INSTALL = "pip install -e '.[search]'"
# Optuna's default waits for 5 finished trials before the median means anything; a sweep of a
# handful of trials would then never prune. Two finished trials make a median of two curves.
MEDIAN_STARTUP_TRIALS = 2
TPE_STARTUP_TRIALS = 10  # Optuna's own n_startup_trials: the default of --startup-trials
RANGE_FORMS = "loguniform(LOW, HIGH), uniform(LOW, HIGH), int(LOW, HIGH) or choice(a, b, ...)"
# Trials failing one after another: the cause is the set-up (a broken install, a missing file,
# an error in the code), not the values drawn, and drawing on would fail the same way; under an
# --epoch-budget forever, since a run that fails at once spends no epoch of it.
STOP_AFTER_FAILURES = 5
DIVERGED = "diverged"  # the user attribute that marks a failed trial whose loss became inf or NaN


class TrialsKeepFailing(ConvexpError):
    """The search stopped: its last `count` trials failed, the last being trial `last`."""

    def __init__(self, count: int, last: int):
        super().__init__(f"the search stopped: its last {count} trials failed one after another")
        self.count, self.last = count, last


class TrialPruned(Exception):
    """A trial's run stopped by the pruner: not an error (not failed) and not completed.
    lifecycle.open_run records the status `pruned`; the sweep goes on."""

    def __init__(self, epoch: int, metric: str, value: float):
        super().__init__(f"pruned after epoch {epoch}: {metric} {value:.4f} is behind the other trials at that epoch")
        self.epoch = epoch


# -- ranges ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """One --space range: a float range (log or not), an int range, or a choice of values."""

    kind: str  # loguniform | uniform | int | choice
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()

    def ends(self) -> list:
        """The values checked against the config before anything runs: both ends, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def suggest(self, trial, key: str) -> Any:
        """The value this Optuna trial draws for `key`."""
        if self.kind == "choice":
            return self.decode(trial.suggest_categorical(key, [self.encode(v) for v in self.choices]))
        if self.kind == "int":
            return trial.suggest_int(key, int(self.low), int(self.high))
        return trial.suggest_float(key, self.low, self.high, log=self.kind == "loguniform")

    def plain(self) -> bool:
        """Optuna's categorical values are scalars: a choice of lists (coupled keys) goes as JSON text."""
        return all(v is None or isinstance(v, (bool, int, float, str)) for v in self.choices)

    def encode(self, value: Any) -> Any:
        return value if self.plain() else json.dumps(value)

    def decode(self, param: Any) -> Any:
        if self.kind == "choice" and not self.plain():
            return json.loads(param)
        return param


def parse_space(items: list[str]) -> dict[str, str]:
    """--space KEY=RANGE items as {key: range text}, each range checked (parse_range)."""
    space: dict[str, str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConvexpError(f"--space {item!r} is not of the form KEY=RANGE: e.g. --space 'train.lr=loguniform(1e-4, 1e-2)'")
        if key in space:
            raise ConvexpError(f"--space {key} is given twice: give each key one range")
        parse_range(key, text)
        space[key] = text.strip()
    return space


def parse_range(key: str, text: str) -> Range:
    """'loguniform(1e-4, 1e-2)' -> Range; what is wrong with it as one line naming the key."""
    where = f"--space {key}={text.strip()}"
    form = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", text)
    if not form:
        raise ConvexpError(f"{where}: not a range; write one of {RANGE_FORMS}")
    kind, inner = form.group(1), form.group(2)
    together = [part.strip() for part in key.split(",")]
    if kind == "choice":
        choices = parse_value(f"[{inner}]")
        if not isinstance(choices, list) or not choices:
            raise ConvexpError(f"{where}: choice needs at least one value, e.g. choice(32, 64)")
        if len(together) > 1 and any(not isinstance(v, list) or len(v) != len(together) for v in choices):
            raise ConvexpError(f"{where}: {key} moves {len(together)} keys together: each choice must list "
                               f"{len(together)} values in that order, e.g. choice([a1, b1], [a2, b2])")
        repeated = [v for i, v in enumerate(choices) if v in choices[:i]]
        if repeated:
            raise ConvexpError(f"{where}: choice lists {repeated[0]!r} more than once")
        return Range("choice", choices=tuple(choices))
    if kind not in ("loguniform", "uniform", "int"):
        raise ConvexpError(f"{where}: unknown range {kind!r}; write one of {RANGE_FORMS}")
    if len(together) > 1:
        raise ConvexpError(f"{where}: keys that move together take choice([a1, b1], [a2, b2]), not a {kind} range")
    ends = [part.strip() for part in inner.split(",")]
    try:
        low, high = (int(v) if kind == "int" else float(v) for v in ends) if len(ends) == 2 else (None, None)
    except ValueError:
        what = "whole numbers" if kind == "int" else "numbers"
        raise ConvexpError(f"{where}: LOW and HIGH must be {what}, e.g. {kind}({'1, 8' if kind == 'int' else '1e-4, 1e-2'})") from None
    if low is None:
        raise ConvexpError(f"{where}: {kind} takes two numbers, LOW and HIGH; got {len(ends)}")
    if not low < high:
        raise ConvexpError(f"{where}: LOW must be below HIGH; got {low:g} >= {high:g}")
    if kind == "loguniform" and not low > 0:
        raise ConvexpError(f"{where}: a log range needs LOW > 0; got {low:g}")
    return Range(kind, low, high)


# -- the study -------------------------------------------------------------------------------------


def require_optuna(sampler: str):
    try:
        import optuna
    except ImportError:
        raise ConvexpError(f"--sampler {sampler} needs Optuna, which is not installed: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial lines would interleave with ours
    return optuna


def make_sampler(name: str, seed: int, startup_trials: int = TPE_STARTUP_TRIALS):
    optuna = require_optuna(name)
    if name == "tpe":
        # A batch of --jobs trials is asked for before any of them is told: constant_liar counts the
        # running ones as poor, so one batch does not draw the same corner --jobs times.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(name: str, epochs: int):
    optuna = require_optuna("tpe")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs))
    return optuna.pruners.NopPruner()


def storage(folder: Path):
    """The journal file in the sweep folder; its lock lets every worker process write to it."""
    require_optuna("tpe")
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(folder / STUDY_FILE)))


def open_study(folder: Path, sampler: str, pruner: str, seed: int, direction: str, epochs: int,
               startup_trials: int = TPE_STARTUP_TRIALS):
    """The sweep's study: created on its first run, loaded again by `convexp resume`."""
    optuna = require_optuna(sampler)
    study = optuna.create_study(storage=storage(folder), study_name=STUDY_NAME, direction=direction,
                                sampler=make_sampler(sampler, seed, startup_trials),
                                pruner=make_pruner(pruner, epochs), load_if_exists=True)
    if study.trials:  # resumed: from `seed` again, the sampler would draw its first trials' values again
        study.sampler = make_sampler(sampler, resumed_seed(seed, len(study.trials)), startup_trials)
    return study


def resumed_seed(seed: int, trials_so_far: int) -> int:
    """The sampler's seed for a search resumed after `trials_so_far` trials: its own stream, the
    same each time that search is resumed at that point (a NumPy seed sequence, so no two
    (seed, trials) pairs share one, as seed + trials would)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, trials_so_far]).generate_state(1)[0])


def load_study(folder: Path):
    """The study in a sweep folder, to read (no sampler or pruner of its own: it draws nothing)."""
    optuna = require_optuna("tpe")
    return optuna.load_study(study_name=STUDY_NAME, storage=storage(folder))


def counted_in(folder: Path) -> int:
    """counted() of the study in a sweep folder; 0 where none was made yet."""
    return counted(load_study(folder)) if (folder / STUDY_FILE).is_file() else 0


def counted(study) -> int:
    """The trials that count towards --trials: all but the failed ones, which are no answer (a
    failed trial is drawn again; STOP_AFTER_FAILURES in a row stop the search). A diverged trial
    is an answer about its values, and counts."""
    return sum(state(trial) != "failed" for trial in study.get_trials(deepcopy=False))


def state(trial) -> str:
    """completed, pruned, diverged, failed or running."""
    if trial.state.name == "FAIL" and trial.user_attrs.get(DIVERGED):
        return "diverged"
    return {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name, "running")


def direction(select: str) -> str:
    return "minimize" if select == "val_loss" else "maximize"


def epoch_metric(select: str) -> str:
    """What a trial reports after each epoch: best_val_accuracy's curve is val_accuracy's."""
    return "val_loss" if select == "val_loss" else "val_accuracy"


# -- pruning ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruning:
    """What a trial's child run needs to report to the study (plain values: it may be in a worker)."""

    folder: str  # the sweep folder, which holds the study
    trial_id: int
    pruner: str
    select: str
    epochs: int
    reports: bool  # the trial's first seed reports its curve; every seed asks whether to stop


class PruneWatcher(Callback):
    """After each epoch: the validation metric to the trial (as step epoch - 1: Optuna's steps
    start at 0), and TrialPruned when the pruner says the trial is behind. Raised after
    metrics.csv has the epoch, so the pruned run keeps its curve."""

    def __init__(self, pruning: Pruning):
        optuna = require_optuna("tpe")
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage(Path(pruning.folder)),
                                  pruner=make_pruner(pruning.pruner, pruning.epochs))
        self.trial = optuna.trial.Trial(study, pruning.trial_id)
        self.pruning = pruning

    def on_epoch_end(self, event: EpochEnd) -> None:
        metric = epoch_metric(self.pruning.select)
        value = float(event.row[metric])
        if self.pruning.reports:
            self.trial.report(value, event.epoch - 1)
        if event.epoch < event.epochs and self.trial.should_prune():
            raise TrialPruned(event.epoch, metric, value)


# -- the search: ask, train, tell ------------------------------------------------------------------


@dataclass(frozen=True)
class Drawn:
    """One trial's point: Optuna's trial number (the sweep's pNN) and the values drawn for it."""

    number: int
    trial_id: int
    values: dict[str, Any]


def search(study, ranges: dict[str, Range], trials: int, batch_size: int,
           train: Callable[[list[Drawn]], dict[int, float | str]], budget_left: Callable[[int], bool] = lambda planned: True) -> None:
    """Trials until the study holds `trials` that did not fail (or `budget_left(trials planned in
    this batch)` says no), `batch_size` at a time:
    those an interrupted sweep left running first (their finished runs are kept), then new ones
    asked of the sampler. `train` trains a batch and says how each trial ended: its objective
    value, "pruned", "diverged" or "failed"; the study is told so before the next batch is asked for, so the
    sampler learns from it. STOP_AFTER_FAILURES failed trials in a row raise TrialsKeepFailing."""
    optuna = require_optuna("tpe")
    waiting = interrupted(study, ranges)
    failed_in_a_row = 0
    while True:
        batch, waiting = waiting[:batch_size], waiting[batch_size:]
        while len(batch) < batch_size and counted(study) < trials and budget_left(len(batch)):
            trial = study.ask()
            values = {key: r.suggest(trial, key) for key, r in ranges.items()}
            batch.append(Drawn(trial.number, trial._trial_id, values))  # the id is what a worker's Trial needs
        if not batch:
            return
        outcomes = train(batch)
        for drawn in batch:
            outcome = outcomes[drawn.number]
            if outcome == "pruned":
                study.tell(drawn.number, state=optuna.trial.TrialState.PRUNED)
            elif outcome == "diverged":  # failed, as Optuna tells a NaN objective, yet an answer: it counts
                optuna.trial.Trial(study, drawn.trial_id).set_user_attr(DIVERGED, True)
                study.tell(drawn.number, state=optuna.trial.TrialState.FAIL)
            elif outcome == "failed":
                study.tell(drawn.number, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(drawn.number, float(outcome))
            failed_in_a_row = failed_in_a_row + 1 if outcome == "failed" else 0
        if failed_in_a_row >= STOP_AFTER_FAILURES:
            raise TrialsKeepFailing(failed_in_a_row, batch[-1].number)


def interrupted(study, ranges: dict[str, Range]) -> list[Drawn]:
    """The trials a stopped sweep left running, to train again; one stopped before its values
    were drawn has nothing to train: it is told failed."""
    optuna = require_optuna("tpe")
    found = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if set(ranges) <= set(trial.params):
            found.append(Drawn(trial.number, trial._trial_id, drawn_values(trial, ranges)))
        else:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return found


def drawn_values(trial, ranges: dict[str, Range]) -> dict[str, Any]:
    return {key: r.decode(trial.params[key]) for key, r in ranges.items()}


def every_trial(study, ranges: dict[str, Range]) -> list[Drawn]:
    """Every trial with its values, in the order they were asked for."""
    return [Drawn(t.number, t._trial_id, drawn_values(t, ranges)) for t in study.get_trials(deepcopy=False)
            if set(ranges) <= set(t.params)]


def counts(study) -> dict[str, int]:
    """How many trials ended each way: completed, pruned, diverged, failed (and still running)."""
    found: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        kind = state(trial)
        found[kind] = found.get(kind, 0) + 1
    return found

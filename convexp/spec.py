"""What an experiment is, declared once, beside its Config and run in experiments/<x>.py.

Every experiment module ends with `SPEC = Experiment(...)`. The command line registers a command
from it (options, flags, help), and `convexp runs`, the report, reproduce, sweep and the study
executor read it, so none of them tests a command's name. The declaration stays light: an
experiment module imports torch and the training code inside its functions, so reading every
spec (what `convexp --help` does) costs no torch import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Question 17 compares two networks; an experiment says which one it trains (Experiment.network).
RESIZE, POOLING = "resize-to-28", "global-pooling"


@dataclass(frozen=True)
class Flag:
    """A command-line flag of one experiment that sets a config key: `count-params --match`
    sets `match: true`; with a value type, `--channels 82` sets `channels: 82`."""

    name: str  # the option as typed, e.g. "--fast-dev-run"
    key: str  # the config key it sets
    help: str
    type: type = bool  # bool: a switch that sets the key to true


@dataclass(frozen=True)
class Experiment:
    name: str  # the command, and the `command` of every run folder it writes
    help: str  # one line for `convexp --help`
    config: type  # its typed config class, read from configs/<name>.yaml
    run: Callable[..., dict | None]  # run(config, run, device, reporter[, execution]) -> what joins summary.json
    questions: tuple[str, ...] = ()  # the seed report's questions it answers; the first is a run's own
    study: bool = False  # it trains child runs, which --jobs / --executor spread (run then takes `execution`)
    sweepable: bool = False  # `convexp sweep <name>` may vary its config's keys
    seed_option: bool = True  # --seed sets its `seed`
    device_option: bool = True  # --device sets its `device`
    flags: tuple[Flag, ...] = ()
    command: bool = True  # the CLI registers its command from this spec (sweep's is written by hand)
    # What `convexp runs` shows of a completed run: its key number, from summary.json.
    key_metric: Callable[[dict], str] | None = None
    network: str = ""  # which of question 17's networks it trains: RESIZE, POOLING, or neither
    # For `convexp report`: a folder of steps (reproduce) stands for its steps, each a run of its
    # own experiment; an experiment whose runs the report does not show says why.
    holds_steps: bool = False
    not_reported: str = ""
    # For a study's progress line and ETA: how many child runs one config trains, and the
    # multiply-adds of one training image through its network.
    children: Callable[[Any], int] = lambda config: 1
    macs_per_image: Callable[[Any], float] | None = None
    # Called on every sweep point's config before anything runs: a point the experiment cannot
    # run as one (e.g. varres-pool with two poolings) is refused with one line.
    check_sweep_point: Callable[[Any], None] | None = None

    @property
    def question(self) -> str:
        """The question a run of it answers when no study says otherwise (`convexp report` of a run)."""
        return self.questions[0] if self.questions else self.name

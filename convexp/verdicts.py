"""The seed report's numbers beside ours, and a verdict for each: reproduced, better or below.

The report's numbers live in reference.yaml beside this file (one entry per number it states,
with the precision it states it to). Ours are the mean ± std over seeds of the matching runs.

Verdict rule: the report's claim is the interval value ± precision; our seed spread is
mean ± 2·std (with three seeds, about the range the seeds themselves cover). They overlap:
reproduced. Ours wholly above: better. Wholly below: below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from convexp.config import flatten
from convexp.errors import ConvexpError
from convexp.spec import POOLING, RESIZE
from convexp.stats import Spread

REFERENCE_FILE = Path(__file__).with_name("reference.yaml")


@dataclass(frozen=True)
class Reference:
    key: str  # Q7, Q16_max, ...
    claim: str
    value: float
    precision: float
    ours: str  # a name in OUR_NUMBERS
    source: str
    method: str

    @property
    def question(self) -> str:
        return self.key.split("_")[0]

    def interval(self) -> tuple[float, float]:
        return self.value - self.precision, self.value + self.precision


def load_reference(path: Path = REFERENCE_FILE) -> list[Reference]:
    entries = yaml.safe_load(path.read_text())
    return [Reference(key, e["claim"], float(e["value"]), float(e["precision"]), e["ours"], e["source"], e["method"])
            for key, e in entries.items()]


def verdict(reference: Reference, ours: Spread | None) -> str:
    if ours is None:
        return "not run"
    low, high = reference.interval()
    if ours.mean + 2 * ours.std < low:
        return "below"
    if ours.mean - 2 * ours.std > high:
        return "better"
    return "reproduced"


# -- our numbers, from the runs of each question ---------------------------------------------------
# A run here is a record (convexp/record.py: its summary.json's fields by name) with `.config`,
# `.network` (which of question 17's networks its experiment trains) and `.children()` (the
# child runs of a study): report.RunInfo.

Runs = dict  # question -> list of runs


def final(key: str) -> Callable:
    return lambda run: run.final[key]


def values(runs: list, number: Callable) -> list[float]:
    return [float(number(run)) for run in seeds_of_one_configuration(runs)]


def pool_children(runs: list, pooling: str) -> list:
    return seeds_of_one_configuration([child for run in runs for child in run.children()
                                       if child.config.get("model", {}).get("pooling") == [pooling]])


def sweep_children(runs: list, batch_size: int) -> list:
    return seeds_of_one_configuration([child for run in runs for child in run.children()
                                       if child.config.get("train", {}).get("batch_size") == batch_size])


# -- which runs one mean ± std over seeds may pool ---------------------------------------------
# Keys that may differ between the seeds of one configuration: the seed itself, where it ran,
# where its data lies on that machine (the data is compared by its split sizes instead), and
# where it was shown (log.*: TensorBoard, MLflow).
NOT_CONFIGURATION = ("seed", "seeds", "device", "data.root", "data.url", "mnist_root", "varres_root", "log.")


def seeds_of_one_configuration(runs: list) -> list:
    """`runs`, when one 'mean ± std over seeds' may pool them: the same config apart from the
    seed, on the same data, each seed once. Two runs of one seed would count one draw twice (std
    0, a 'beyond the spread' verdict on nothing), and runs of other settings or data are not
    seeds of one experiment: a ConvexpError says which, and how to report them apart."""
    first = flatten(runs[0].config) if runs else {}
    for run in runs[1:]:
        other = flatten(run.config)
        differ = sorted(key for key in first.keys() | other.keys()
                        if not key.startswith(NOT_CONFIGURATION) and first.get(key) != other.get(key))
        if differ:
            raise refusal(runs[0], run, f"differ in {', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}")
        if data_sizes(run) != data_sizes(runs[0]):
            raise refusal(runs[0], run, f"trained on other data (train/val/test {data_sizes(runs[0])} vs {data_sizes(run)})")
    seeds = [run.summary.get("seed", run.config.get("seed")) for run in runs]
    for i, seed in enumerate(seeds):
        if seed is not None and seed in seeds[:i]:  # (a run that records no seed cannot be judged)
            raise refusal(runs[seeds.index(seed)], runs[i], f"both trained seed {seed}, one draw counted twice")
    return runs


def refusal(a, b, why: str) -> ConvexpError:
    return ConvexpError(f"{a.path} and {b.path} {why}: a mean ± std over seeds pools the seeds of one "
                        "configuration on the same data, each seed once; report such runs separately")


def data_sizes(run) -> tuple | None:
    data = run.data
    return None if data is None else (data.train, data.val, data.test)


OUR_NUMBERS: dict[str, Callable[[Runs], list[float]]] = {
    "q7_val_accuracy": lambda q: values(q.get("Q7", []), final("val_accuracy")),
    "q8_best_val_accuracy_batch32": lambda q: values(sweep_children(q.get("Q8", []), 32), lambda r: r.best_val_accuracy),
    "q9_augmented_test_accuracy": lambda q: values([r for r in q.get("Q9", []) if r.summary.get("augmented")],
                                                   lambda r: r.test_accuracy),
    "q12_val_accuracy": lambda q: values(q.get("Q12", []), final("val_accuracy")),
    "q16_max_test_accuracy": lambda q: values(pool_children(q.get("Q16", []), "max"), lambda r: r.test_accuracy),
    "q16_mean_test_accuracy": lambda q: values(pool_children(q.get("Q16", []), "mean"), lambda r: r.test_accuracy),
    "q17_resize_test_accuracy": lambda q: values([r for r in q.get("Q17", []) if r.network == RESIZE],
                                                 lambda r: r.test_accuracy),
    "q17_pool_test_accuracy": lambda q: values(pool_children([r for r in q.get("Q17", []) if r.network == POOLING], "max"),
                                               lambda r: r.test_accuracy),
    "q15_parameters_n81": lambda q: [float(run.summary["parameters"][name]) for run in q.get("Q15", [])
                                     for name in run.summary.get("parameters", {}) if name == "VariableInputNet(N=81)"],
}


@dataclass
class Row:
    reference: Reference
    ours: Spread | None
    verdict: str


def compare(by_question: Runs, references: list[Reference] | None = None) -> list[Row]:
    rows = []
    for reference in references or load_reference():
        found = OUR_NUMBERS[reference.ours](by_question)
        ours = Spread.of(found) if found else None
        rows.append(Row(reference, ours, verdict(reference, ours)))
    return rows

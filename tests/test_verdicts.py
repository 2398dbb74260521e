"""The report's numbers against ours: the verdict rule, the reference file, the question-8 check."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from convexp.report import (
    RunInfo,
    batch_size_loss,
    by_question,
    caveats,
    headline_section,
)
from convexp.stats import Spread
from convexp.verdicts import (
    OUR_NUMBERS,
    REFERENCE_FILE,
    Reference,
    compare,
    load_reference,
    verdict,
)
from tests.helpers import expected_verdict, stated

Q = Reference("Q9", "test accuracy 99%", 0.99, 0.002, "q9_augmented_test_accuracy", "question 9", "")


@pytest.mark.parametrize(
    ("ours", "expected"),
    [
        (Spread(0.9905, 0.0010, 3), "reproduced"),  # the report's 0.99 inside our spread
        (Spread(0.9860, 0.0005, 3), "below"),  # 0.9860 + 0.0010 < 0.988
        (Spread(0.9950, 0.0010, 3), "better"),  # 0.9950 - 0.0020 > 0.992
        (Spread(0.9860, 0.0010, 3), "reproduced"),  # 0.9860 + 0.0020 reaches 0.988
        (Spread(0.9870, 0.0, 1), "below"),  # one seed: the point itself
    ],
)
def test_verdict_rule(ours, expected):
    assert verdict(Q, ours) == expected


def test_no_runs_no_verdict():
    assert verdict(Q, None) == "not run"


def test_reference_file_names_only_numbers_we_compute():
    references = load_reference()
    assert {r.key for r in references} >= {"Q7", "Q8", "Q9", "Q12", "Q15", "Q16_max", "Q16_mean", "Q17_resize", "Q17_pool"}
    for r in references:
        assert r.ours in OUR_NUMBERS, r.key
        assert r.precision >= 0 and r.claim and r.source
    pool = next(r for r in references if r.key == "Q17_pool")
    assert (pool.value, pool.question) == (0.9889, "Q17")  # the report's 98.89%


def write_run(path: Path, summary: dict, config: dict) -> RunInfo:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({"status": "completed", **summary}))
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return RunInfo(path, {"status": "completed", **summary}, config)


def test_compare_reads_each_question_from_its_runs(tmp_path):
    runs = [write_run(tmp_path / f"augment-{on}-seed{s}", {"command": "augment", "question": "Q9", "augmented": on == "on",
                                                         "test_accuracy": acc}, {})
            for s, (on, acc) in enumerate([("on", 0.991), ("on", 0.992), ("on", 0.990), ("off", 0.95)])]
    for seed, accuracy in enumerate([0.989, 0.988]):
        study = tmp_path / f"final-pool-seed{seed}"
        write_run(study / f"max-seed{seed}", {"command": "varres-pool", "test_accuracy": accuracy}, {"model": {"pooling": ["max"]}})
        runs.append(write_run(study, {"command": "varres-pool", "question": "Q17"}, {}))
    rows = {row.reference.key: row for row in compare(by_question(runs))}
    assert rows["Q9"].ours == Spread.of([0.991, 0.992, 0.990]) and rows["Q9"].verdict == "reproduced"  # plain runs left out
    assert rows["Q17_pool"].ours.n == 2 and rows["Q17_pool"].ours.mean == pytest.approx(0.9885)
    assert rows["Q7"].verdict == "not run"


def write_sweep(path: Path, losses: dict[int, list[float]], **summary) -> RunInfo:
    """A sweep-batch study: one child per batch size and seed, with its final validation loss."""
    for size, per_seed in losses.items():
        for seed, loss in enumerate(per_seed):
            write_run(path / f"bs{size}-seed{seed}", {"final": {"val_loss": loss}, **summary}, {"train": {"batch_size": size}})
    return write_run(path, {"command": "sweep-batch"}, {})


def test_question_8_loss_claim_checked_per_sample(tmp_path):
    """Equal per-digit losses: summing per batch still falls with the batch size; per digit it does not."""
    same = [0.040, 0.042, 0.038]
    sweep = write_sweep(tmp_path / "sweep", {16: same, 32: same, 64: same}, data={"val": 10_000}, best_val_accuracy=0.99)
    check = batch_size_loss([sweep])
    assert check["verdict"] == "does not survive per-sample averaging"
    assert check["summed"][16].mean == pytest.approx(0.040 * 625)
    assert check["summed"][16].mean > check["summed"][32].mean > check["summed"][64].mean


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        # means 0.050 > 0.040 > 0.030, each ± 0.001: apart by far more than the spreads
        ({16: [0.050, 0.051, 0.049], 32: [0.040, 0.041, 0.039], 64: [0.030, 0.031, 0.029]},
         "survives: lower per sample for every larger batch, beyond the seed spread"),
        # means 0.045 > 0.043 > 0.041, each ± 0.005: the same order, the spreads overlapping
        ({16: [0.045, 0.050, 0.040], 32: [0.043, 0.048, 0.038], 64: [0.041, 0.046, 0.036]},
         "same order, but within the seed spread"),
        # batch 32 above batch 16: not falling with the batch size at all
        ({16: [0.040, 0.041, 0.039], 32: [0.042, 0.043, 0.041], 64: [0.030, 0.031, 0.029]},
         "does not survive per-sample averaging"),
    ],
)
def test_question_8_loss_claim_verdict_per_branch(tmp_path, losses, expected):
    assert batch_size_loss([write_sweep(tmp_path / "sweep", losses)])["verdict"] == expected


# -- every headline number over three seeds, against an independent recomputation ------------------

# Where each reference number's three seeds sit, in units of their std (which is `spread`): 0 is
# the report's value itself; ±1.5 lies 1.5 std beyond the report's interval, so mean ± 2 std still
# reaches it and mean ± 1 std would not; ±3 is beyond it either way. Cycled over the keys, so every
# verdict occurs and a rule with the wrong width changes some of them.
PLACEMENTS = [1.5, -1.5, 3, -3, 0]


def seeds_around(value: float, precision: float, placement: float) -> list[float]:
    spread = max(precision, abs(value) * 0.001)  # Q15's count is stated exactly (precision 0)
    edge = value + precision if placement > 0 else value - precision if placement < 0 else value
    mean = edge + placement * spread
    return [mean - spread, mean, mean + spread]  # sample std: spread


def write_seed(path: Path, seed: int, n: dict[str, float]) -> list[RunInfo]:
    """One seed's runs as `reproduce` lays them out, each reference number `n[key]` in the one run it
    belongs to, and decoys (10 points off) where a wrong choice of run would read them."""
    runs = []

    def decoy(key: str) -> float:
        return n[key] - 0.1

    def step(name: str, command: str, question: str, **summary) -> None:
        runs.append(write_run(path / f"{name}-seed{seed}", {"command": command, "question": question, **summary}, {}))

    def study(name: str, command: str, question: str, children: dict[str, tuple[dict, dict]]) -> None:
        for child, (summary, config) in children.items():
            write_run(path / f"{name}-seed{seed}" / f"{child}-seed{seed}", summary, config)
        step(name, command, question)

    step("train-mnist", "train-mnist", "Q7", final={"val_accuracy": n["Q7"]}, best_val_accuracy=decoy("Q7"))
    study("sweep-batch", "sweep-batch", "Q8", {
        f"bs{size}": ({"best_val_accuracy": n["Q8"] if size == 32 else decoy("Q8"), "final": {"val_loss": 0.04}},
                      {"train": {"batch_size": size}}) for size in (16, 32, 64)})
    step("augment-on", "augment", "Q9", augmented=True, test_accuracy=n["Q9"])
    step("augment-off", "augment", "Q9", augmented=False, test_accuracy=decoy("Q9"))
    step("varres-resize", "varres-resize", "Q12", final={"val_accuracy": n["Q12"]}, test_accuracy=decoy("Q12"))
    step("count-params", "count-params", "Q15", parameters={"MNISTConvNet": n["Q15"] + 37, "VariableInputNet(N=81)": n["Q15"]})
    study("varres-pool", "varres-pool", "Q16", {
        pooling: ({"test_accuracy": n[f"Q16_{pooling}"]}, {"model": {"pooling": [pooling]}}) for pooling in ("max", "mean")})
    step("final-resize", "varres-resize", "Q17", test_accuracy=n["Q17_resize"])
    study("final-pool", "varres-pool", "Q17", {"max": ({"test_accuracy": n["Q17_pool"]}, {"model": {"pooling": ["max"]}})})
    return runs


def test_headline_numbers_and_verdicts_over_three_seeds_match_an_independent_recomputation(tmp_path):
    references = yaml.safe_load(REFERENCE_FILE.read_text())
    ours = {key: seeds_around(r["value"], r["precision"], PLACEMENTS[i % len(PLACEMENTS)])
            for i, (key, r) in enumerate(references.items())}
    runs = [run for seed in range(3) for run in write_seed(tmp_path, seed, {key: v[seed] for key, v in ours.items()})]
    questions = by_question(runs)
    expected = {key: expected_verdict(r["value"], r["precision"], ours[key]) for key, r in references.items()}
    assert set(expected.values()) == {"reproduced", "better", "below"}  # every branch of the rule is met
    for row in compare(questions):
        values = ours[row.reference.key]
        assert (row.ours.mean, row.ours.std, row.ours.n) == pytest.approx(
            (statistics.fmean(values), statistics.stdev(values), 3)), row.reference.key
        assert row.verdict == expected[row.reference.key], row.reference.key
    table = headline_section(questions).tables[0][1]
    assert {row[0]: (row[3], row[4]) for row in table} == {
        key: (stated(ours[key], 0 if r["value"] >= 1 else 4), expected[key]) for key, r in references.items()}


# -- the warnings that say a verdict compares unlike things -------------------------------------

# The report's training sets: MNIST's first 50,000 digits, and 80% of mnist-varres' 60,000 images.
FULL_DATA = {"Q7": 50_000, "Q8": 50_000, "Q9": 50_000, "Q12": 48_000, "Q16": 48_000, "Q17": 48_000}


def questions_on(tmp_path: Path, train_sizes: dict[str, int], train: dict) -> dict[str, list[RunInfo]]:
    """One run per question, trained on `train_sizes[question]` images with `train` in its config."""
    return by_question([write_run(tmp_path / question, {"question": question, "data": {"root": "r", "train": size, "val": 10_000,
                                                                                          "test": 10_000}}, {"train": train})
                        for question, size in train_sizes.items()])


def test_a_full_data_study_carries_no_warning(tmp_path):
    questions = questions_on(tmp_path, FULL_DATA, {"max_batches": 0, "max_eval_batches": 0})
    assert caveats(questions) == []  # the headline's warnings: none for a study at the report's sizes and settings


def test_a_question_trained_on_other_data_is_named(tmp_path):
    caught = caveats(questions_on(tmp_path, FULL_DATA | {"Q12": 6_400}, {"max_batches": 0, "max_eval_batches": 0}))
    assert len(caught) == 1 and caught[0].startswith("WARNING: Q12 trained on other data than the report's")


def test_a_mini_fast_dev_run_is_flagged_three_times(tmp_path):
    mini = {question: 6_400 for question in FULL_DATA}
    caught = caveats(questions_on(tmp_path, mini, {"max_batches": 5, "max_eval_batches": 5}))
    assert len(caught) == 3
    assert caught[0].startswith("WARNING: runs cut to a few batches per epoch (--fast-dev-run")
    assert caught[1].startswith("WARNING: accuracies measured on the first few batches of each split only")
    assert caught[2].startswith(f"WARNING: {', '.join(sorted(FULL_DATA))} trained on other data than the report's")

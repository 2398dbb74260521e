"""The report's numbers against ours: the verdict rule, the reference file, the question-8 check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from convexp.report import RunInfo, batch_size_loss, by_question
from convexp.stats import Spread
from convexp.verdicts import OUR_NUMBERS, Reference, compare, load_reference, verdict

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


def test_question_8_loss_claim_checked_per_sample(tmp_path):
    """Equal per-digit losses: summing per batch still falls with the batch size; per digit it does not."""
    sweep = write_run(tmp_path / "sweep", {"command": "sweep-batch"}, {})
    for size in (16, 32, 64):
        for seed, loss in enumerate([0.040, 0.042, 0.038]):
            write_run(tmp_path / "sweep" / f"bs{size}-seed{seed}",
                      {"final": {"val_loss": loss}, "data": {"val": 10_000}, "best_val_accuracy": 0.99},
                      {"train": {"batch_size": size}})
    check = batch_size_loss([sweep])
    assert check["verdict"] == "does not survive per-sample averaging"
    assert check["summed"][16].mean == pytest.approx(0.040 * 625)
    assert check["summed"][16].mean > check["summed"][32].mean > check["summed"][64].mean


def test_question_8_loss_claim_that_holds(tmp_path):
    sweep = write_run(tmp_path / "sweep", {"command": "sweep-batch"}, {})
    for size, losses in ((16, [0.050, 0.051, 0.049]), (32, [0.040, 0.041, 0.039]), (64, [0.030, 0.031, 0.029])):
        for seed, loss in enumerate(losses):
            write_run(tmp_path / "sweep" / f"bs{size}-seed{seed}", {"final": {"val_loss": loss}}, {"train": {"batch_size": size}})
    assert batch_size_loss([sweep])["verdict"].startswith("survives")

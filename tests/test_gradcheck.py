"""`convexp gradcheck`: Part 1 of the report checked, a row per question, Function and shape;
a wrong backward fails the run (exit 1) and shows as failed on the report page."""

from __future__ import annotations

import csv
import json
import sys

import torch

from convexp import autograd
from convexp.derivations import FORMULAS, opinfo_rows, output_size_rows
from tests.helpers import invoke, only_run

QUICK = ["--set", "random_shapes=1", "--set", "opinfo=false"]


def rows_of(run) -> list[dict]:
    with (run / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_every_question_of_part_one_is_checked_for_both_layouts(tmp_path):
    result = invoke("gradcheck", "--set", "random_shapes=1", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    rows = rows_of(run)
    assert {r["question"] for r in rows} == set(FORMULAS)
    assert all(r["result"] == "passed" for r in rows), [r for r in rows if r["result"] != "passed"]
    functions = {r["function"] for r in rows}
    assert {"divide", "sigmoid", "W Xᵀ", "expand", "conv2d (unfold)", "conv2d (unfold-reference)"} <= functions
    conv = [r for r in rows if r["question"] == "conv Q6" and "MNISTConvNet conv2" in r["shape"]]
    assert len(conv) == 2 and all("fast gradcheck" in r["check"] and "not supported" in r["check"] for r in conv)
    assert sum("OpInfo samples" in r["shape"] for r in rows) == 4  # 2 layouts x float64, float32
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["failed_checks"] == 0 and summary["checks"] == len(rows)
    assert all(entry["verdict"] == "checked" for entry in summary["part1"].values())
    assert max(float(r["max_abs_error"] or 0) for r in rows) < 1e-3  # float32 against PyTorch: rounding only
    assert "Part 1: the derivations, checked" in (run / "log.txt").read_text()
    listing = invoke("runs", "--out", str(tmp_path))
    assert f"{len(rows)}/{len(rows)} checks, largest error" in listing.stdout


def test_a_wrong_backward_fails_the_run_naming_it_exits_1_and_the_report_says_failed(tmp_path, monkeypatch):
    def missing_a_factor(ctx, grad_y):  # σ' taken as σ: the (1 - σ) forgotten
        (y,) = ctx.saved_tensors
        return grad_y * y

    monkeypatch.setattr(autograd.Sigmoid, "backward", staticmethod(missing_a_factor))
    result = invoke("gradcheck", *QUICK, "--out", str(tmp_path), "-q")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Q2 sigmoid at X (3, 4)" in line and "Jacobian mismatch" in line
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "Q2 sigmoid" in summary["error"]
    assert summary["part1"]["Q2"]["verdict"] == "failed" and summary["part1"]["Q1"]["verdict"] == "checked"
    assert any(r["function"] == "sigmoid" and r["result"].startswith("failed") for r in rows_of(run))
    report = invoke("report", str(run))
    assert report.returncode == 0, report.stderr
    page = (run / "report.md").read_text()
    assert f"| Q2 | {FORMULAS['Q2']} |" in page and "| failed |" in page.split("## Part 1: the derivations, checked")[1]
    assert "| Part 1 | hand-derived backward passes (questions 1-4, conv 1-6) equal PyTorch's | gradcheck |" in page
    assert page.count("| failed |") >= 2  # the section's Q2 row and the headline row


def test_the_output_size_formula_holds_and_the_reports_printed_one_lacks_its_plus_one():
    grid, question_10 = output_size_rows(torch.device("cpu"))
    assert grid.result == "passed" and "927 cases" in grid.shape
    assert question_10.result == "passed" and "without its + 1" in question_10.note
    differing, of = (int(word) for word in question_10.note.split("differs from PyTorch in ")[1].split(" undilated")[0].split(" of "))
    assert 0 < differing <= of  # the printed formula is off by one wherever the division is exact


def test_opinfo_samples_are_skipped_with_the_reason_when_their_packages_are_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "expecttest", None)  # import expecttest -> ImportError
    rows = opinfo_rows(torch.device("cpu"))
    assert len(rows) == 2 and all(r.result.startswith("skipped") and "pip install expecttest hypothesis" in r.result
                                  for r in rows)


def test_bad_random_shapes_is_one_line(tmp_path):
    result = invoke("gradcheck", "--set", "random_shapes=-1", "--out", str(tmp_path))
    assert result.returncode == 2 and "config key 'random_shapes' must be from 0 to 50; got -1" in result.stderr
    assert not tmp_path.joinpath("runs").exists() and not any(tmp_path.iterdir())

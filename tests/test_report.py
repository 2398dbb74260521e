"""reproduce --fast-dev-run, then report and runs: tables checked against the run folders."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml

from convexp.report import beyond_spread, fmt, spread
from convexp.verdicts import REFERENCE_FILE
from tests.helpers import (
    SMOKE_EVAL,
    assert_same_files,
    expected_verdict,
    interrupted_then_resumed,
    invoke,
    mean_std,
    only_run,
    stated,
)

pytestmark = pytest.mark.xdist_group("reproduce")  # one test process runs the study they all read


def test_spread_format_and_overlap_rule():
    a, b = spread([0.90, 0.92, 0.94]), spread([0.95, 0.96, 0.97])
    assert fmt(a) == "0.9200 ± 0.0200 (n=3)"
    assert beyond_spread(a, b) == "yes"  # 0.92 + 0.02 < 0.96 - 0.01
    assert beyond_spread(a, spread([0.93, 0.94, 0.95])) == "no"
    assert beyond_spread(spread([0.9]), b) == "n/a (one seed)"
    assert fmt(spread([0.5])) == "0.5000 (1 seed)"


def fast_study(varres_root: str) -> list[str]:
    """The study every test here reads: reproduce --fast-dev-run on mnist-mini, on the CPU."""
    return ["reproduce", "--fast-dev-run", "--set", f"mnist_root={os.environ['CONVEXP_DATA']}/mnist-mini",
            "--set", "val_split=0.2", "--set", f"varres_root={varres_root}", "--device", "cpu"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    if not os.environ.get("CONVEXP_DATA"):
        pytest.skip("real-data test: set CONVEXP_DATA to the folder holding mnist-mini (e.g. ../shared/data)")
    out = tmp_path_factory.mktemp("reproduce")
    result = invoke(*fast_study("build"), "--out", str(out), "-q")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    (run,) = out.iterdir()
    report = invoke("report", str(run))
    assert report.returncode == 0, report.stderr
    return run, result.stdout


STEPS_OF_SEED_0 = ["part1", "count-params", "train-mnist-seed0", "sweep-batch-seed0", "augment-on-seed0", "augment-off-seed0",
                   "varres-resize-seed0", "varres-pool-seed0", "final-resize-seed0", "final-pool-seed0",
                   "varres-best-seed0"]


@pytest.mark.slow(seconds=60)  # with the reproduce fixture
def test_reproduce_runs_every_question_in_order(reproduced):
    run, stdout = reproduced
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["fast_dev_run"] is True
    assert summary["steps"] == STEPS_OF_SEED_0  # --fast-dev-run: one seed round
    assert set(summary["questions"].values()) == {"part1", "Q7", "Q8", "Q9", "Q12", "Q15", "Q16", "Q17", "beyond"}
    assert set(summary["step_seconds"]) == set(STEPS_OF_SEED_0) and summary["total_seconds"] > 0
    for step in summary["steps"]:
        child = json.loads((run / step / "summary.json").read_text())
        assert child["status"] == "completed", step
        assert child["question"] == summary["questions"][step]
    assert (run / "mnist-varres" / "train").is_dir()  # varres_root=build
    # the question-17 steps run at the final comparison's settings, the others at the report's own
    final = (run / "final-resize-seed0" / "config.yaml").read_text()
    assert "lr: 0.0009" in final and "epochs: 1\n" in final  # fast dev run: 1 epoch, 5 batches of 32 per evaluation
    assert "eval_batch_size: 32\n" in final and "max_eval_batches: 5\n" in final
    assert "pooling:\n  - max\n" in (run / "final-pool-seed0" / "config.yaml").read_text()
    # progress: which step, and where the whole study stands
    assert "[4/11] Q8 sweep-batch-seed0: convexp sweep-batch" in stdout
    best = (run / "varres-best-seed0" / "config.yaml").read_text()  # configs/varres-best.yaml's network
    assert "widths:\n  - 16\n  - 32\n  - 32\n" in best and "norm: batch" in best and "schedule: cosine" in best
    assert (run / "varres-best-seed0" / "plots" / "augmentations.png").is_file()  # its augment.preview_*
    assert re.search(r"study \d+%, \S+ elapsed, ETA \S+", stdout)
    assert "reproduce: time per step" in stdout and "reproduce: time per step" in (run / "log.txt").read_text()


@pytest.mark.slow
def test_report_tables_match_the_run_folders(reproduced):
    run, _ = reproduced
    markdown = (run / "report.md").read_text()
    train = json.loads((run / "train-mnist-seed0" / "summary.json").read_text())
    assert f"| train-mnist-seed0 | {train['final']['val_accuracy']:.4f} | {train['test_accuracy']:.4f} |" in markdown
    assert "| Q7 | MNISTConvNet, batch 16" in markdown
    assert f"| {train['final']['val_accuracy']:.4f} (1 seed) |" in markdown
    on = json.loads((run / "augment-on-seed0" / "summary.json").read_text())
    assert "| augmented | 1 |" in markdown and f"{on['test_accuracy']:.4f} (1 seed)" in markdown
    pool = json.loads((run / "final-pool-seed0" / "max-seed0" / "summary.json").read_text())
    assert "| Q17_pool |" in markdown and f"{pool['test_accuracy']:.4f} (1 seed)" in markdown
    assert "| Q15 | 29,066 parameters" in markdown and "| 29029 (1 seed) | reproduced |" in markdown
    assert "81 (29,029), 82 (29,328)" in markdown
    best = json.loads((run / "varres-best-seed0" / "max-seed0" / "summary.json").read_text())
    assert "## Beyond the report" in markdown and "28,838 parameters, within the budget of 29,066" in markdown
    assert f"| varres-best (this study) | 1 | {best['test_accuracy']:.4f} (1 seed) |" in markdown
    assert "convexp sweep varres-pool --config configs/varres-best.yaml" in markdown
    # a smoke run on mini is flagged as such, so nobody reads its verdicts as the report's
    assert "WARNING: runs cut to a few batches per epoch (--fast-dev-run" in markdown and "trained on other data than the report's" in markdown
    assert "WARNING: accuracies measured on the first few batches of each split only" in markdown
    assert "| Q7 | train-mnist-seed0 |" in markdown and "mnist-mini | 6,400 | 1,600 | 2,000 |" in markdown
    assert re.search(r"\| Q8 \| sweep-batch-seed0 \| \d+ \| \d+\.\d \|", markdown)
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert (run / image).is_file(), image
    assert (run / "report-plots" / "q8_val_loss_summed.png").is_file()


@pytest.mark.slow
def test_html_is_self_contained(reproduced):
    run, _ = reproduced
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 8
    assert not re.search(r"(src|href)=['\"]?https?:", page)
    assert "The seed report&#x27;s results beside ours" in page


@pytest.mark.slow
def test_html_renders_in_headless_chromium(reproduced, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`)")
    run, _ = reproduced
    shot = tmp_path / "report.png"
    rendered = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                               f"--screenshot={shot}", "--window-size=1200,2400", (run / "report.html").as_uri()],
                              check=False, capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr[-2000:]  # a crash after the screenshot is still a failure
    assert shot.is_file() and shot.stat().st_size > 20_000  # a page with tables and figures, not a blank one


@pytest.mark.slow
def test_runs_lists_the_folder_with_its_data(reproduced):
    run, _ = reproduced
    result = invoke("runs", "--out", str(run))
    assert result.returncode == 0
    assert "train-mnist" in result.stdout and "completed" in result.stdout and "test acc" in result.stdout
    assert "mnist-mini 6400/1600/2000" in result.stdout


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    result = invoke("report", str(tmp_path))
    assert result.returncode == 2 and "is not a convexp run folder" in result.stderr


@pytest.mark.slow
def test_an_unfinished_study_is_reported_as_unfinished(reproduced, tmp_path):
    """A study that was interrupted (or killed) is never passed off as complete."""
    import shutil

    run, _ = reproduced
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
    report = invoke("report", str(copy))
    assert report.returncode == 0, report.stderr
    assert f"WARNING: {copy} is interrupted, not completed" in (copy / "report.md").read_text()
    assert f"`convexp resume {copy}` completes it" in (copy / "report.md").read_text()


# -- the headline table, recomputed from the step folders ------------------------------------------
# Independent of convexp.report and convexp.verdicts: our numbers are read from each child's own
# files (metrics.csv, summary.json, params.json), mean and std come from `statistics`, and the
# verdict rule is written out again here, so a slip in either place shows as a differing row.


def metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def children(study: Path) -> list[Path]:
    return sorted(p for p in study.iterdir() if (p / "summary.json").is_file())


def pooled(run: Path, steps: str, pooling: str) -> list[float]:
    """Test accuracy of every child of the `steps` studies that pools by `pooling` alone."""
    return [summary(c)["test_accuracy"] for s in sorted(run.glob(steps)) for c in children(s)
            if config(c)["model"]["pooling"] == [pooling]]


def our_numbers(run: Path) -> dict[str, list[float]]:
    """Per reference.yaml key, the seeds' numbers, from the files each step wrote."""
    def steps(pattern: str) -> list[Path]:
        return sorted(run.glob(pattern))

    def final(step: Path, column: str) -> float:
        return float(metrics(step)[-1][column])

    return {
        "Q7": [final(s, "val_accuracy") for s in steps("train-mnist-seed*")],
        "Q8": [max(float(row["val_accuracy"]) for row in metrics(c))  # best epoch, of the batch-32 child only
               for s in steps("sweep-batch-seed*") for c in children(s) if config(c)["train"]["batch_size"] == 32],
        "Q9": [summary(s)["test_accuracy"] for s in steps("augment-*-seed*") if config(s)["augment"]["enabled"]],
        "Q12": [final(s, "val_accuracy") for s in steps("varres-resize-seed*")],
        "Q15": [m["parameters"] for s in steps("count-params") for m in json.loads((s / "params.json").read_text())["match"]
                if m["channels"] == 81],
        "Q16_max": pooled(run, "varres-pool-seed*", "max"),
        "Q16_mean": pooled(run, "varres-pool-seed*", "mean"),
        "Q17_resize": [summary(s)["test_accuracy"] for s in steps("final-resize-seed*")],
        "Q17_pool": pooled(run, "final-pool-seed*", "max"),
    }


def beyond(a: list[float], b: list[float]) -> str:
    if len(a) < 2 or len(b) < 2:
        return "n/a (one seed)"
    (mean_a, std_a), (mean_b, std_b) = mean_std(a), mean_std(b)
    return "yes" if abs(mean_a - mean_b) > std_a + std_b else "no"


def line(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def comparison(title: str, name_a: str, a: list[float], name_b: str, b: list[float]) -> str:
    return line(title, f"{name_a} {stated(a)}; {name_b} {stated(b)}", f"{statistics.fmean(a) - statistics.fmean(b):+.4f}",
                beyond(a, b))


def loss_claim(run: Path) -> str:
    """Question 8's row: each batch size's per-sample validation loss at the final epoch, and its verdict."""
    losses: dict[int, list[float]] = {}
    for child in (c for s in sorted(run.glob("sweep-batch-seed*")) for c in children(s)):
        losses.setdefault(config(child)["train"]["batch_size"], []).append(float(metrics(child)[-1]["val_loss"]))
    sizes = sorted(losses)
    pairs = list(itertools.pairwise(sizes))
    falling = all(statistics.fmean(losses[a]) > statistics.fmean(losses[b]) for a, b in pairs)
    verdict = ("does not survive per-sample averaging" if not falling else
               "survives: lower per sample for every larger batch, beyond the seed spread"
               if all(beyond(losses[a], losses[b]) == "yes" for a, b in pairs) else "same order, but within the seed spread")
    return line("Q8: larger batches give a lower validation loss (per-sample mean, final epoch)",
                "; ".join(f"batch {b}: {stated(losses[b])}" for b in sizes),
                f"batch {', '.join(map(str, sizes))}: " + ", ".join(f"{statistics.fmean(losses[b]):.4f}" for b in sizes), verdict)


@pytest.mark.slow
def test_headline_rows_match_the_numbers_recomputed_from_the_step_folders(reproduced):
    run, _ = reproduced
    lines = (run / "report.md").read_text().splitlines()
    references = yaml.safe_load(REFERENCE_FILE.read_text())
    ours = our_numbers(run)
    assert set(ours) == set(references)  # a number added to reference.yaml needs its recomputation here
    for key, reference in references.items():
        assert ours[key], key  # every question ran in the study
        row = line(key, reference["claim"], f"{reference['value']:g} ± {reference['precision']:g}",
                   stated(ours[key], 0 if reference["value"] >= 1 else 4),
                   expected_verdict(reference["value"], reference["precision"], ours[key]))
        assert row in lines, row  # number and verdict together, in the one row


@pytest.mark.slow
def test_comparison_rows_match_the_numbers_recomputed_from_the_step_folders(reproduced):
    run, _ = reproduced
    lines = (run / "report.md").read_text().splitlines()
    ours = our_numbers(run)
    best = pooled(run, "varres-best-seed*", "max")
    expected = [
        comparison("Q16: max pooling ahead of mean pooling (test)", "max", ours["Q16_max"], "mean", ours["Q16_mean"]),
        comparison("Q17: pooling net ahead of resize-to-28 (test)", "pooling", ours["Q17_pool"], "resize", ours["Q17_resize"]),
        comparison("Beyond: configs/varres-best.yaml ahead of the report's varres network (test, same budget)",
                   "varres-best", best, "Q17 pooling", ours["Q17_pool"]),
        loss_claim(run),
    ]
    for row in expected:
        assert row in lines, row


@pytest.mark.slow(seconds=40)
def test_reproduce_interrupted_mid_step_then_resumed_trains_the_same_bytes(reproduced, tmp_path):
    """Ctrl-C inside a step, then `convexp resume`: every step's metrics.csv and batches.csv as the
    fixture's uninterrupted study wrote them."""
    run, _ = reproduced
    # The fixture's varres folder: the same images, without building them again.
    args = fast_study(str(run / "mnist-varres"))
    # Each child of a fast dev run trains 5 batches; part1 and count-params train none. train-mnist is batches
    # 1-5, sweep-batch's children (batch 16, 32, 64) 6-10, 11-15, 16-20: batch 13 stops the study in
    # the middle of sweep-batch's batch-32 child, with a child done before it and one still to come.
    resumed = interrupted_then_resumed(args, tmp_path, batch=13)
    assert_same_files(resumed, run)


@pytest.mark.slow
def test_part_one_is_on_the_page_of_a_fast_dev_run_study(reproduced):
    """The study's first step checks the derivations; the report shows each question's verdict
    with the largest error that results.csv holds, and a headline row."""
    run, _ = reproduced
    markdown = (run / "report.md").read_text()
    section = markdown.split("## Part 1: the derivations, checked")[1].split("\n## ")[0]
    with (run / "part1" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    for question in ("Q1", "Q2", "Q3", "Q4", "conv Q1", "conv Q2", "conv Q3", "conv Q4", "conv Q5", "conv Q6"):
        checked = [r for r in rows if r["question"] == question]
        errors = [float(r["max_abs_error"]) for r in checked if r["max_abs_error"]]
        largest = f"{max(errors):.1e}" if errors else "-"
        assert f"| {question} | " in section and f"| {len(checked)} | {largest} | checked |" in section, question
    assert "`conv: unfold-reference`" in section and "without its + 1" in section
    total = len(rows)
    assert re.search(rf"\| Part 1 \| hand-derived backward passes .* \| gradcheck \| {total} checks, largest float32 error "
                     r"[0-9.e+-]+ \| checked \|", markdown)


# -- a mean ± std over seeds pools only the seeds of one configuration, on the same data, each once --

POOL_STUDY = ["varres-pool", "--set", "model.pooling=[max]", "--set", "train.epochs=1", "--set", "train.max_batches=3",
              "--set", "train.batch_size=16", *SMOKE_EVAL, "-q"]


def pool_study(out: Path, root: Path, *changes: str) -> Path:
    result = invoke(*POOL_STUDY, "--set", f"data.root={root}", *changes, "--out", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return only_run(out)


def fewer_images(course_varres: Path, tmp_path: Path) -> Path:
    """The course's images less ten training images of digit 3: other data."""
    copy = tmp_path / "fewer"
    shutil.copytree(course_varres, copy)
    for image in sorted((copy / "train" / "3").glob("*.png"))[:10]:
        image.unlink()
    return copy


@pytest.mark.parametrize("second,why", [
    ([], "both trained seed 0, one draw counted twice"),
    (["--set", "seeds=[1]", "--set", "train.lr=0.01"], "differ in train.lr"),
    (["--set", "seeds=[1]", "other-data"], "trained on other data"),
], ids=["same-seed-twice", "other-settings", "other-data"])
def test_report_refuses_to_pool_runs_that_are_not_seeds_of_one_configuration(tmp_path, course_varres, second, why):
    first = pool_study(tmp_path / "a", course_varres)
    root = fewer_images(course_varres, tmp_path) if "other-data" in second else course_varres
    again = pool_study(tmp_path / "b", root, *[a for a in second if a != "other-data"])
    result = invoke("report", str(first), str(again), "--out", str(tmp_path / "report"))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and why in lines[0] and "report such runs separately" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_report_pools_two_studies_of_other_seeds(tmp_path, course_varres):
    first = pool_study(tmp_path / "a", course_varres)
    second = pool_study(tmp_path / "b", course_varres, "--set", "seeds=[1]")
    result = invoke("report", str(first), str(second), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert "(n=2)" in (tmp_path / "report" / "report.md").read_text()


def test_a_study_of_some_questions_plans_only_theirs_at_the_precision_asked():
    import torch

    from convexp.experiments.reproduce import ReproduceConfig, steps

    config = ReproduceConfig(questions=["Q7", "Q17"], precision="bf16", seeds=[0, 1], mnist_root="m", varres_root="v")
    plan = steps(config, Path("v"), torch.device("cpu"))
    assert [s.name for s in plan] == ["train-mnist-seed0", "final-resize-seed0", "final-pool-seed0",
                                      "train-mnist-seed1", "final-resize-seed1", "final-pool-seed1"]
    assert {s.config.train.precision for s in plan} == {"bf16"}
    every = steps(ReproduceConfig(mnist_root="m", varres_root="v", seeds=[0]), Path("v"), torch.device("cpu"))
    assert len(every) == len(STEPS_OF_SEED_0) - 1  # beyond: false unless asked
    assert {s.config.train.precision for s in every if hasattr(s.config, "train")} == {"fp32"}


@pytest.mark.parametrize("section", ["q7_section", "q12_section", "q17_section"])
def test_each_section_pools_only_seeds_of_one_configuration_by_itself(section):
    """The sections' own mean ± std keep the rule, not only the headline's verdicts."""
    from convexp import report
    from convexp.errors import ConvexpError

    command = {"q7_section": "train-mnist", "q12_section": "varres-resize", "q17_section": "varres-resize"}[section]
    twice = [report.RunInfo(Path(f"/runs/{name}"), {"status": "completed", "command": command, "seed": 0},
                            {"seed": 0, "train": {"lr": 0.001}}) for name in ("a", "b")]
    with pytest.raises(ConvexpError, match="both trained seed 0, one draw counted twice"):
        getattr(report, section)(twice)

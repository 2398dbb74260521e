"""reproduce --fast-dev-run, then report and runs: tables checked against the run folders."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from convexp.report import beyond_spread, fmt, spread
from tests.conftest import run_cli


def test_spread_format_and_overlap_rule():
    a, b = spread([0.90, 0.92, 0.94]), spread([0.95, 0.96, 0.97])
    assert fmt(a) == "0.9200 ± 0.0200 (n=3)"
    assert beyond_spread(a, b) == "yes"  # 0.92 + 0.02 < 0.96 - 0.01
    assert beyond_spread(a, spread([0.93, 0.94, 0.95])) == "no"
    assert beyond_spread(spread([0.9]), b) == "n/a (one seed)"
    assert fmt(spread([0.5])) == "0.5000 (1 seed)"


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, request):
    import os

    if not os.environ.get("CONVEXP_DATA"):
        pytest.skip("real-data test: set CONVEXP_DATA to the folder holding mnist-mini (e.g. ../shared/data)")
    out = tmp_path_factory.mktemp("reproduce")
    result = run_cli("reproduce", "--fast-dev-run", "--set", f"mnist_root={os.environ['CONVEXP_DATA']}/mnist-mini",
                     "--device", "cpu", "--out", str(out), "-q")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    (run,) = out.iterdir()
    report = run_cli("report", str(run))
    assert report.returncode == 0, report.stderr
    return run


@pytest.mark.slow
def test_reproduce_runs_every_step(reproduced):
    summary = json.loads((reproduced / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["fast_dev_run"] is True
    for step in summary["steps"]:
        assert json.loads((reproduced / step / "summary.json").read_text())["status"] == "completed", step
    assert set(summary["steps"]) >= {"train-mnist", "sweep-batch", "augment-on-seed0", "augment-off-seed0",
                                      "varres-resize-seed0", "varres-pool", "count-params"}
    assert (reproduced / "mnist-varres" / "train").is_dir()


@pytest.mark.slow
def test_report_tables_match_the_run_folders(reproduced):
    markdown = (reproduced / "report.md").read_text()
    train = json.loads((reproduced / "train-mnist" / "summary.json").read_text())
    assert f"| train-mnist | {train['final']['val_accuracy']:.4f} | {train['test_accuracy']:.4f} |" in markdown
    on = json.loads((reproduced / "augment-on-seed0" / "summary.json").read_text())
    assert f"augmented {on['test_accuracy']:.4f} (1 seed)" in markdown
    pool = json.loads((reproduced / "varres-pool" / "summary.json").read_text())["results"]
    assert f"max {pool['max']['test_accuracy']['mean']:.4f} (1 seed)" in markdown
    resize = json.loads((reproduced / "varres-resize-seed0" / "summary.json").read_text())
    assert f"resize {resize['test_accuracy']:.4f} (1 seed)" in markdown
    assert "MNISTConvNet: 29,066" in markdown and "81 (29,029), 82 (29,328)" in markdown
    for question in ("Q7", "Q8", "Q9", "Q15", "Q16", "Q17"):
        assert f"| {question}:" in markdown
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert (reproduced / image).is_file(), image


@pytest.mark.slow
def test_html_is_self_contained(reproduced):
    page = (reproduced / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 8
    assert not re.search(r"(src|href)=['\"]?https?:", page)
    assert "The seed report&#x27;s results beside ours" in page


@pytest.mark.slow
def test_html_renders_in_headless_chromium(reproduced, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`)")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1200,2400", (reproduced / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a page with tables and figures, not a blank one


@pytest.mark.slow
def test_runs_lists_the_folder(reproduced):
    result = run_cli("runs", "--out", str(reproduced))
    assert result.returncode == 0
    assert "train-mnist" in result.stdout and "completed" in result.stdout and "test acc" in result.stdout


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2 and "is not a convexp run folder" in result.stderr

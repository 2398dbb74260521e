"""Real-data smoke runs of the Part 2 experiments through the CLI (1 epoch, small sweeps)."""

from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import invoke, mini, only_run

pytestmark = pytest.mark.slow



@pytest.mark.slow(seconds=25)
def test_sweep_batch_writes_a_child_per_point_and_a_summary(tmp_path, mnist_root):
    result = invoke("sweep-batch", *mini(mnist_root), "--set", "train.epochs=1", "--set", "train.max_batches=40",
                     "--set", "sweep.batch_sizes=[64, 128]", "--set", "sweep.seeds=[0, 1]", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    children = sorted(p.name for p in run.iterdir() if p.is_dir() and p.name != "plots")
    assert children == ["bs128-seed0", "bs128-seed1", "bs64-seed0", "bs64-seed1"]
    for child in children:
        summary = json.loads((run / child / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert (run / child / "metrics.csv").is_file() and (run / child / "model.pt").is_file()
    with open(run / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["batch_size"], r["seed"]) for r in rows] == [("64", "0"), ("64", "1"), ("128", "0"), ("128", "1")]
    # recorded 0.7125-0.79 after 40 batches (seeds 0, 1; 2026-11-30); the floor keeps a 0.06 margin
    assert all(float(r["best_val_accuracy"]) > 0.65 for r in rows)
    parent = json.loads((run / "summary.json").read_text())
    assert parent["status"] == "completed"
    assert parent["results"]["128"]["runs"] == 2
    assert (run / "plots" / "val_loss.png").is_file() and (run / "plots" / "val_accuracy.png").is_file()
    # children's own config.yaml says their batch size and seed
    assert "batch_size: 128" in (run / "bs128-seed1" / "config.yaml").read_text()


def test_sweep_records_a_failed_child_goes_on_and_is_not_completed(tmp_path, mnist_root):
    result = invoke("sweep-batch", *mini(mnist_root), "--set", "train.epochs=1", "--set", "train.lr=1e30",
                     "--set", "train.max_batches=3", "--set", "sweep.batch_sizes=[512]", "--set", "sweep.seeds=[0, 1]",
                     "--out", str(tmp_path), "-q")
    assert result.returncode == 2  # a study is completed only when all its runs are
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "2 of 2 runs of this study failed (bs512-seed0, bs512-seed1)" in result.stderr
    run = only_run(tmp_path)
    with open(run / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["failed", "failed"]
    child = json.loads((run / "bs512-seed0" / "summary.json").read_text())
    assert child["status"] == "failed" and "learning rate" in child["error"]
    parent = json.loads((run / "summary.json").read_text())
    assert parent["status"] == "failed" and "2 of 2 runs" in parent["error"] and parent["results"]["512"]["failed"] == 2


def test_augment_one_epoch_with_preview_and_clean_evaluation(tmp_path, mnist_root):
    result = invoke("augment", *mini(mnist_root), "--set", "train.epochs=1", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    assert (run / "plots" / "augmentations.png").is_file()
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["augmented"] is True
    assert summary["test_accuracy"] > 0.9


def test_bad_augmentation_fails_before_any_run_folder(tmp_path):
    result = invoke("augment", "--set", "augment.transforms=[{name: Flip}]", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown augmentation 'Flip'; allowed: RandomAffine" in result.stderr
    assert not any(tmp_path.iterdir())

from __future__ import annotations

import math

import pytest

from convexp.experiments.sweep_batch import aggregate_by_batch_size
from convexp.stats import mean_std, mean_std_per_epoch


def test_mean_std_on_hand_made_numbers():
    mean, std = mean_std([0.97, 0.98, 0.99])
    assert mean == pytest.approx(0.98)
    assert std == pytest.approx(0.01)  # sample std: sqrt((1e-4 + 0 + 1e-4) / 2)
    assert mean_std([0.5]) == (0.5, 0.0)


def test_mean_std_per_epoch():
    means, stds = mean_std_per_epoch([[1.0, 2.0], [3.0, 4.0]])
    assert means == [2.0, 3.0]
    assert stds == pytest.approx([math.sqrt(2), math.sqrt(2)])


def test_sweep_aggregate_skips_failed_children():
    rows = [
        {"batch_size": 16, "seed": 0, "status": "completed", "best_val_accuracy": 0.9, "final_val_loss": 0.3, "test_accuracy": 0.8, "seconds_per_epoch": 2.0},
        {"batch_size": 16, "seed": 1, "status": "completed", "best_val_accuracy": 0.94, "final_val_loss": 0.1, "test_accuracy": 0.9, "seconds_per_epoch": 4.0},
        {"batch_size": 16, "seed": 2, "status": "failed", "best_val_accuracy": "", "final_val_loss": "", "test_accuracy": "", "seconds_per_epoch": ""},
    ]
    entry = aggregate_by_batch_size(rows)["16"]
    assert entry["runs"] == 2 and entry["failed"] == 1
    assert entry["best_val_accuracy"]["mean"] == pytest.approx(0.92)
    assert entry["best_val_accuracy"]["std"] == pytest.approx(math.sqrt(0.0008))
    assert entry["seconds_per_epoch"]["mean"] == pytest.approx(3.0)

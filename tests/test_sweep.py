"""`convexp sweep`: the grid, its errors, and a real sweep on mnist-mini chosen on validation only."""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from pathlib import Path

import pytest

from convexp.config import load_config
from convexp.experiments.sweep import Point, SweepConfig, grid_points
from convexp.experiments.train_mnist import TrainMnistConfig
from tests.helpers import (
    SMOKE_EVAL,
    assert_same_files,
    interrupted_then_resumed,
    invoke,
    mini,
    only_run,
    sigint_at_batch,
)


def test_grid_is_the_product_and_random_draws_distinct_points_reproducibly():
    config = SweepConfig(experiment="train-mnist", grid={"train.lr": [1e-3, 5e-4, 1e-4], "train.batch_size": [16, 32]})
    points = grid_points(config)
    assert [p.values for p in points[:2]] == [{"train.lr": 1e-3, "train.batch_size": 16}, {"train.lr": 1e-3, "train.batch_size": 32}]
    assert len(points) == 6 and len({p.name for p in points}) == 6
    drawn = grid_points(SweepConfig(experiment="train-mnist", grid=config.grid, random=4, seed=7))
    again = grid_points(SweepConfig(experiment="train-mnist", grid=config.grid, random=4, seed=7))
    assert drawn == again and len(drawn) == 4 and len({p.index for p in drawn}) == 4
    assert set(p.index for p in drawn) <= set(range(6))
    assert Point(3, {"train.lr": 0.1}).name == "p03"


def test_points_are_built_from_their_index_in_the_products_order_without_listing_the_grid():
    grid = {"train.lr": [1e-3, 5e-4], "train.batch_size": [16, 32, 64], "train.epochs": [1, 2]}
    config = SweepConfig(experiment="train-mnist", grid=grid)
    product = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    assert [p.values for p in grid_points(config)] == product
    drawn = grid_points(SweepConfig(experiment="train-mnist", grid=grid, random=5, seed=3))
    assert [p.values for p in drawn] == [product[p.index] for p in drawn]
    # 10^12 points: drawing 3 of them costs 3 points (listing the product would never end)
    huge = {f"train.k{i}": list(range(10)) for i in range(12)}
    points = grid_points(sweep_of(huge, random=3))
    assert len(points) == 3 and all(len(p.values) == 12 for p in points)
    assert all(int("".join(str(v) for v in p.values.values())) == p.index for p in points)


def sweep_of(grid: dict, random: int) -> SweepConfig:
    """A SweepConfig over keys the experiment lacks (unchecked here: grid_points only counts)."""
    config = SweepConfig(experiment="train-mnist", grid={"train.lr": [0.1]}, random=random)
    config.grid = grid
    return config


@pytest.mark.slow(seconds=5)
def test_a_sweep_creates_a_points_folder_only_when_the_point_starts(tmp_path, mnist_root):
    args = ["sweep", "train-mnist", "--grid", "train.lr=[0.001, 0.002, 0.003, 0.004]", "--set", "train.max_batches=2",
            *SMOKE_EVAL, *mini(mnist_root), "--out", str(tmp_path), "-q"]
    with sigint_at_batch(1):  # Ctrl-C in the first point's first epoch
        stopped = invoke(*args)
    assert stopped.returncode == 130, stopped.stderr
    assert sorted(p.name for p in only_run(tmp_path).glob("p*")) == ["p00-seed0"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["train-mnist", "--grid", "train.lrr=[0.1, 0.2]"], "sweep point train.lrr=0.1: unknown config key 'train.lrr'; did you mean 'train.lr'?"),
        (["train-mnist", "--grid", "train.lr=[0.1, fast]"], "sweep point train.lr=fast: config key 'train.lr' must be a number; got 'fast'"),
        (["train-mnist", "--grid", "train.epochs=[0, 1]"], "sweep point train.epochs=0: config key 'train.epochs' must be"),
        (["bench", "--grid", "rounds=[1, 2]"], "cannot sweep 'bench': choose one of train-mnist, augment, varres-resize, varres-pool"),
        (["train-mnist"], "a sweep needs at least one --grid KEY=[values]"),
        (["train-mnist", "--grid", "train.lr=0.1"], "--grid train.lr needs a non-empty list of values in brackets"),
        (["train-mnist", "--grid", "train.lr=[0.1, 0.1]"], "--grid train.lr lists 0.1 more than once"),
        (["train-mnist", "--grid", "train.lr"], "--grid 'train.lr' is not of the form KEY=[v1, v2]"),
        (["train-mnist", "--grid", "train.lr=[0.1]", "--grid", "train.lr=[0.2]"], "--grid train.lr is given twice"),
        (["train-mnist", "--grid", "train.lr=[0.1]", "--seeds", "0,x"], "--seeds '0,x' must be whole numbers separated by commas"),
        (["train-mnist", "--grid", "train.lr=[0.1]", "--seeds", "1,1"], "seeds lists 1 more than once"),
        (["train-mnist", "--grid", "train.lr=[0.1]", "--select", "test_accuracy"], "config key 'select' must be one of best_val_accuracy, val_accuracy, val_loss"),
        (["train-mnist", "--grid", "train.lr=[0.1]", "--random", "-1"], "--random must be 0 (the whole grid) or a number of points"),
        (["varres-pool", "--grid", "train.lr=[0.1]", "--set", "model.pooling=[max, mean]"], "varres-pool sweeps one pooling per point"),
        (["varres-pool", "--grid", "model.widths,model.channels=[80, 49]", "--set", "model.pooling=[max]"],
         "--grid model.widths,model.channels moves 2 keys together: each value must list 2 values in that order"),
        (["train-mnist", "--grid", "train.lr=[0.1]", "--grid", "train.epochs,train.lr=[[1, 0.1]]"],
         "--grid sets train.lr in two places: give each key once"),
        (["train-mnist", "--grid", "train.lr,seed=[[0.1, 1]]"], "--grid seed: the seeds of every point are --seeds"),
        (["train-mnist", "--grid", "train.lr,=[[0.1, 1]]"], "--grid train.lr,: an empty key"),
        (["varres-pool", "--grid", "model.widths,model.channels=[[[16, 32], 80], [[16, -1], 49]]", "--set", "model.pooling=[max]"],
         "sweep point model.widths,model.channels=[[16, -1], 49]: model.widths must list channel counts from 1"),
        # a large sweep is asked for (no terminal here: --yes), a huge one refused; both before any folder
        (["train-mnist", "--grid", f"train.lr={[i / 1e4 for i in range(1, 31)]}", "--grid", f"train.epochs={list(range(1, 21))}"],
         "this sweep trains 600 points x 1 seed(s) = 600 runs: pass --yes to start it"),
        (["train-mnist", "--grid", f"train.lr={[i / 1e4 for i in range(1, 101)]}", "--grid", f"train.epochs={list(range(1, 101))}",
          "--seeds", "0,1", "--yes"], "10,000 points x 2 seed(s) = 20,000 runs, more than the 10,000 a sweep may hold: draw some with --random N"),
        (["train-mnist", "--space", "train.lr=loguniform(1e-4, 1e-2)", "--trials", "300", "--seeds", "0,1"],
         "this sweep trains 300 points x 2 seed(s) = 600 runs: pass --yes"),
        (["train-mnist", "--space", "train.lr=loguniform(1e-4, 1e-2)", "--sampler", "random", "--trials", "4",
          "--startup-trials", "2"], "--startup-trials is tpe's (the random trials before it models); --sampler random"),
        (["train-mnist", "--space", "train.lr=loguniform(1e-4, 1e-2)", "--trials", "4", "--startup-trials", "0"],
         "--startup-trials must be 1 or more; got 0"),
        (["train-mnist", "--space", "train.lr=loguniform(1e-4, 1e-2)", "--trials", "1000", "--epoch-budget", "800"],
         "this sweep trains 1,000 points x 1 seed(s) = 1,000 runs, about 800 at most under --epoch-budget 800: pass --yes"),
    ],
)
def test_sweep_errors_are_one_line_before_anything_runs(tmp_path, args, message):
    result = invoke("sweep", *args, "--out", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was created


@pytest.mark.slow
def test_a_2x2_sweep_on_mini_chooses_on_validation_and_tests_only_the_choice(tmp_path, mnist_root):
    result = invoke("sweep", "train-mnist", "--grid", "train.lr=[0.001, 0.003]", "--grid", "train.batch_size=[32, 64]",
                     *mini(mnist_root), *SMOKE_EVAL, "--set", "train.epochs=1", "--set", "train.max_batches=30", "--jobs", "2",
                     "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    (study,) = tmp_path.iterdir()
    with (study / "points.csv").open() as f:
        points = list(csv.DictReader(f))
    assert len(points) == 4
    assert points == ranking_from_children(study, "best_val_accuracy", seeds=[0])  # best first
    best = points[0]["point"]
    summaries = {p.name: json.loads((p / "summary.json").read_text()) for p in study.glob("p[0-9]*-seed*")}
    assert len(summaries) == 4 and all(s["status"] == "completed" for s in summaries.values())
    for name, summary in summaries.items():  # the test split was read for the chosen point alone
        assert ("test_accuracy" in summary) == name.startswith(best), name
    headline = json.loads((study / "summary.json").read_text())
    assert headline["status"] == "completed" and headline["best"]["point"] == best
    assert "after the choice on validation" in headline["best"]["tested"]
    chosen = load_config(TrainMnistConfig, study / "best.yaml")  # what --config accepts
    assert chosen.train.lr == float(points[0]["train.lr"]) and chosen.train.batch_size == int(points[0]["train.batch_size"])
    assert chosen.train.test
    assert {p.name for p in (study / "plots").iterdir()} == {"best_val_accuracy_against_train_lr.png",
                                                            "best_val_accuracy_against_train_batch_size.png"}
    assert "test accuracy, measured for this point only, after the choice" in result.stdout
    report = invoke("report", str(study))  # the seed report's questions are not a sweep's
    assert report.returncode == 2 and "is a sweep: its ranking is in points.csv" in report.stderr
    listing = invoke("runs", "--out", str(tmp_path))
    assert f"{best}: best_val_accuracy {float(points[0]['best_val_accuracy_mean']):.4f}, test" in listing.stdout


def ranking_from_children(study: Path, select: str, seeds: list[int], written: bool = True) -> list[dict]:
    """points.csv's rows as they should be, computed here from each child's own metrics.csv: the
    mean ± std over seeds of the selection metric (best_val_accuracy: the highest val_accuracy
    of any epoch; val_accuracy and val_loss: the final epoch's), best first (lowest for val_loss);
    `written`: as rows of the study's points.csv (strings, with the swept values)."""
    def metric(child: Path) -> float:
        with (child / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        if select == "best_val_accuracy":
            return max(float(row["val_accuracy"]) for row in rows)
        return float(rows[-1][select])

    names = sorted({child.name.split("-")[0] for child in study.glob("p[0-9]*-seed*")})
    rows = []
    for name in names:
        values = [metric(study / f"{name}-seed{seed}") for seed in seeds]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append({"point": name, f"{select}_mean": statistics.fmean(values), f"{select}_std": std})
    rows.sort(key=lambda row: row[f"{select}_mean"], reverse=select != "val_loss")
    if not written:
        return rows
    with (study / "points.csv").open() as f:  # the swept values, as the sweep wrote them
        written = {row["point"]: row for row in csv.DictReader(f)}
    return [{**written[row["point"]], **{k: str(v) for k, v in row.items()}, "runs": str(len(seeds)), "failed": "0"}
            for row in rows]


@pytest.mark.parametrize("select", ["best_val_accuracy", "val_accuracy", "val_loss"])
def test_rank_takes_each_metric_as_its_definition_says(tmp_path, select):
    """Children whose validation curves peak before the last epoch, so the best epoch and the
    final one disagree: the ranking must take the metric asked for, averaged over seeds."""
    from convexp.experiments.sweep import rank
    from convexp.runs import RunFolder

    curves = {  # point -> per seed: (val_accuracy, val_loss) per epoch
        "p00": [[(0.90, 0.30), (0.97, 0.10), (0.91, 0.28)], [(0.92, 0.25), (0.96, 0.12), (0.93, 0.22)]],
        "p01": [[(0.93, 0.20), (0.94, 0.18), (0.95, 0.15)], [(0.94, 0.19), (0.95, 0.16), (0.94, 0.17)]],
        "p02": [[(0.80, 0.60), (0.85, 0.40), (0.99, 0.05)], [(0.70, 0.90), (0.75, 0.70), (0.60, 1.20)]],
    }
    for point, seeds in curves.items():
        for seed, epochs in enumerate(seeds):
            child = RunFolder(tmp_path / f"{point}-seed{seed}")
            child.write_csv("metrics.csv", [{"epoch": e + 1, "val_loss": loss, "val_accuracy": acc} for e, (acc, loss) in enumerate(epochs)])
            child.write_json("summary.json", {"status": "completed"})
            (child.path / "config.yaml").write_text("{}")
    config = SweepConfig(experiment="train-mnist", grid={"train.lr": [0.1, 0.2, 0.3]}, seeds=[0, 1], select=select)
    ranked = rank(config, grid_points(config), RunFolder(tmp_path))
    expected = ranking_from_children(tmp_path, select, seeds=[0, 1], written=False)
    assert [r["point"].name for r in ranked] == [row["point"] for row in expected]
    assert [(r["mean"], r["std"]) for r in ranked] == [(row[f"{select}_mean"], row[f"{select}_std"]) for row in expected]


# Two points, two seeds each, ranked by the final validation loss (lower is better)
VAL_LOSS_SWEEP = ["sweep", "train-mnist", "--grid", "train.lr=[0.0003, 0.003]", "--seeds", "0,1", "--select", "val_loss",
                  "--set", "train.epochs=2", "--set", "train.max_batches=8", "--set", "train.batch_size=64", *SMOKE_EVAL]


@pytest.mark.slow(seconds=20)
def test_a_val_loss_sweep_over_seeds_ranks_lowest_first_and_resumes_to_the_same_bytes(tmp_path, mnist_root):
    args = [*VAL_LOSS_SWEEP, *mini(mnist_root)]
    straight = invoke(*args, "--out", str(tmp_path / "straight"), "-q")
    assert straight.returncode == 0, straight.stderr
    study = only_run(tmp_path / "straight")
    with (study / "points.csv").open() as f:
        points = list(csv.DictReader(f))
    assert points == ranking_from_children(study, "val_loss", seeds=[0, 1])
    assert float(points[0]["val_loss_std"]) > 0  # two seeds, really spread
    best = points[0]["point"]
    assert load_config(TrainMnistConfig, study / "best.yaml").train.lr == float(points[0]["train.lr"])
    tested = {p.name for p in study.glob("p*-seed*") if "test_accuracy" in json.loads((p / "summary.json").read_text())}
    assert tested == {f"{best}-seed0", f"{best}-seed1"}
    # Ctrl-C in epoch 2 of the third child (each trains 2 x 8 batches), then resume: the finished
    # children are kept, the third continues, the fourth starts; every number as in one go
    resumed = interrupted_then_resumed(args, tmp_path / "resumed", batch=2 * 16 + 8 + 3)
    assert_same_files(resumed, study, ("metrics.csv", "batches.csv", "points.csv"))
    assert "resuming after epoch 1 of 2" in (resumed / "p01-seed0" / "log.txt").read_text()


def test_keys_joined_by_commas_move_together():
    """A network's widths and the channel count that keeps it in budget: one point each pair."""
    from convexp.config import to_dict
    from convexp.experiments.sweep import point_config
    from convexp.experiments.varres_pool import VarresPoolConfig

    base = to_dict(VarresPoolConfig(model=VarresPoolConfig().model.__class__(pooling=["max"])))
    config = SweepConfig(experiment="varres-pool", base=base, grid={
        "model.widths,model.channels": [[[16, 32], 80], [[16, 32, 32], 49]], "model.norm": ["batch", "layer"]})
    points = grid_points(config)
    assert len(points) == 4
    built = [point_config(config, p, 0).model for p in points]
    assert [(m.widths, m.channels, m.norm) for m in built] == [
        ([16, 32], 80, "batch"), ([16, 32], 80, "layer"), ([16, 32, 32], 49, "batch"), ([16, 32, 32], 49, "layer")]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--grid", "seed=[1, 2]"], "--grid seed: the seeds of every point are --seeds"),
        (["--grid", "device=[cpu, cuda]"], "--grid device: one device runs the whole sweep: --device"),
        (["--grid", "train.test=[true, false]"], "--grid train.test: the sweep tests only the chosen point"),
        (["--grid", "train=[1, 2]"], "sweep point train=1: config section 'train' must be a mapping of its keys, got 1"),
        (["--grid", "train.lr=[0.1]", "--seeds", "0,,1"], "--seeds '0,,1' must be whole numbers separated by commas"),
    ],
)
def test_keys_the_sweep_owns_and_malformed_points_are_one_line(tmp_path, args, message):
    result = invoke("sweep", "train-mnist", *args, "--out", str(tmp_path / "runs"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_without_seeds_a_sweep_takes_the_experiment_configs_own():
    """--config configs/varres-best.yaml sweeps its three seeds; --set seed=7 is used, not ignored."""
    from convexp.experiments.varres_pool import VarresPoolConfig
    from convexp.sweep_options import config_seeds

    assert config_seeds(VarresPoolConfig(seeds=[0, 1, 2])) == [0, 1, 2]
    assert config_seeds(TrainMnistConfig(seed=7)) == [7]


def test_an_epoch_budget_bounds_the_runs_a_search_is_asked_about(tmp_path):
    """1,000 trials under a budget of 40 epochs train 40 runs at most: no question, no --yes."""
    from convexp.application import RunOptions
    from convexp.experiments.sweep_points import sweep_size
    from convexp.sweep_options import sweep_config

    config = sweep_config("train-mnist", [], 0, None, "best_val_accuracy", RunOptions(out=tmp_path),
                          ["train.lr=loguniform(1e-4, 1e-2)"], "random", 1000, "none", epoch_budget=40)
    assert sweep_size(config) == (40, "1,000 points x 1 seed(s) = 1,000 runs, about 40 at most under --epoch-budget 40")

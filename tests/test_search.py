"""`convexp sweep --space/--sampler/--pruner` (convexp/search.py): every bad range as one line, the
ask/tell loop and its resume without training, then real searches on mnist-mini: tpe over a log
range with --jobs 2, a diverging learning rate pruned after its first epoch, and a resumed search
that repeats no finished trial."""

from __future__ import annotations

import csv
import json
import platform
import statistics
import sys
from pathlib import Path

import pytest

from convexp.search import (
    Drawn,
    Range,
    counts,
    every_trial,
    open_study,
    parse_range,
    search,
)
from tests.helpers import SMOKE_EVAL, interrupted_then_resumed, invoke, mini, only_run

pytest.importorskip("optuna", reason="the search extra: pip install -e '.[search]'")

TRAIN = "train-mnist"
LR = "train.lr=loguniform(1e-4, 1e-2)"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--space", "train.lr=loguniform(0, 1e-2)"], "--space train.lr=loguniform(0, 1e-2): a log range needs LOW > 0; got 0"),
        (["--space", "train.lr=loguniform(-1, 1e-2)"], "a log range needs LOW > 0; got -1"),
        (["--space", "train.lr=loguniform(1e-2, 1e-4)"], "--space train.lr=loguniform(1e-2, 1e-4): LOW must be below HIGH; got 0.01 >= 0.0001"),
        (["--space", "train.lr=uniform(0.1, 0.1)"], "LOW must be below HIGH; got 0.1 >= 0.1"),
        (["--space", "train.epochs=int(3, 1)"], "LOW must be below HIGH; got 3 >= 1"),
        (["--space", "train.epochs=int(1.5, 3)"], "--space train.epochs=int(1.5, 3): LOW and HIGH must be whole numbers"),
        (["--space", "train.lr=uniform(a, 0.2)"], "LOW and HIGH must be numbers"),
        (["--space", "train.lr=uniform(0.1)"], "uniform takes two numbers, LOW and HIGH; got 1"),
        (["--space", "train.lr=normal(0, 1)"], "unknown range 'normal'; write one of loguniform(LOW, HIGH)"),
        (["--space", "train.lr=0.1"], "--space train.lr=0.1: not a range"),
        (["--space", "train.lr"], "--space 'train.lr' is not of the form KEY=RANGE"),
        (["--space", "train.lrr=uniform(0.1, 0.2)"], "--space train.lrr=uniform(0.1, 0.2): sweep point train.lrr=0.1: unknown config key 'train.lrr'"),
        (["--space", "train.batch_size=loguniform(1, 64)"], "config key 'train.batch_size' must be an integer; got 1.0"),
        (["--space", "train.epochs=int(0, 3)"], "sweep point train.epochs=0: config key 'train.epochs' must be"),
        (["--space", "train.optimizer=choice(adam, sgd2)"], "sweep point train.optimizer=sgd2: config key 'train.optimizer' must be one of"),
        (["--space", "train.batch_size=choice(32, 32)"], "choice lists 32 more than once"),
        (["--space", "train.batch_size=choice()"], "choice needs at least one value"),
        (["--space", "train.lr,train.batch_size=uniform(0.1, 0.2)"], "keys that move together take choice([a1, b1], [a2, b2])"),
        (["--space", "train.lr,train.batch_size=choice([0.1, 16], [0.2])"], "moves 2 keys together: each choice must list 2 values"),
        (["--space", "seed=int(1, 3)"], "--space seed: the seeds of every point are --seeds"),
        (["--space", LR, "--space", "train.lr=uniform(0.1, 0.2)"], "--space train.lr is given twice"),
        (["--space", LR, "--grid", "train.lr=[0.1]"], "--grid and --space set train.lr in two places"),
        (["--space", LR, "--sampler", "grid"], "--space ranges need a sampler that draws from them"),
        (["--grid", "train.lr=[0.1, 0.2]", "--pruner", "median"], "--pruner needs a search (--sampler tpe or random)"),
        (["--space", LR, "--trials", "0"], "--sampler tpe needs --trials N"),
        (["--grid", "train.lr=[0.1, 0.2]", "--trials", "3"], "--trials counts a search's points"),
        (["--space", LR, "--random", "2"], "--random draws from a grid"),
        (["--space", LR, "--sampler", "anneal"], "config key 'sampler' must be one of grid, random, tpe"),
        (["--space", LR, "--pruner", "asha"], "config key 'pruner' must be one of none, median, hyperband"),
        (["--space", LR, "--pruner", "median", "--executor", "ray"], "--pruner with --executor ray is not supported"),
        (["--grid", "train.lr=[0.1, 0.2]", "--epoch-budget", "8"], "--epoch-budget bounds a search (--sampler tpe or random)"),
        (["--space", LR, "--trials", "3", "--epoch-budget", "-1"], "--epoch-budget must be 0 (none) or a number of epochs; got -1"),
    ],
)
def test_every_bad_range_is_one_line_before_anything_runs(tmp_path, args, message):
    trials = [] if "--trials" in args else ["--trials", "2"]
    result = invoke("sweep", TRAIN, *args, *trials, "--out", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_a_study_experiment_is_not_pruned(tmp_path):
    result = invoke("sweep", "varres-pool", "--space", LR, "--trials", "2", "--pruner", "median",
                    "--set", "model.pooling=[max]", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2 and "varres-pool is a study of its own runs, which it does not prune" in result.stderr


def test_without_optuna_a_search_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    result = invoke("sweep", TRAIN, "--space", LR, "--trials", "2", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --sampler tpe needs Optuna, which is not installed: pip install -e '.[search]'"
    grid = invoke("sweep", TRAIN, "--grid", "train.lr=[0.1, 0.2]", "--set", "train.epochs=0", "--out", str(tmp_path / "runs"))
    assert "Optuna" not in grid.stderr  # a grid needs no Optuna (the error here is the config's)


def test_ranges_draw_within_their_bounds_and_coupled_choices_come_back_as_lists(tmp_path):
    ranges = {"train.lr": parse_range("train.lr", "loguniform(1e-4, 1e-2)"),
              "train.epochs": parse_range("train.epochs", "int(1, 3)"),
              "model.widths,model.channels": parse_range("model.widths,model.channels", "choice([[16, 32], 80], [[8], 40])")}
    assert ranges["model.widths,model.channels"].choices == ([[16, 32], 80], [[8], 40])
    study = open_study(tmp_path, "random", "none", 0, "maximize", 2)
    seen = []
    search(study, ranges, trials=6, batch_size=2, train=lambda batch: seen.extend(batch) or {d.number: 0.5 for d in batch})
    assert [d.number for d in seen] == list(range(6))
    for drawn in seen:
        assert 1e-4 <= drawn.values["train.lr"] <= 1e-2 and drawn.values["train.epochs"] in (1, 2, 3)
        assert drawn.values["model.widths,model.channels"] in ([[16, 32], 80], [[8], 40])
    assert Range("choice", choices=(1, "a")).plain() and not ranges["model.widths,model.channels"].plain()


def fake_objective(drawn: Drawn) -> float:
    return -abs(drawn.values["x"] - 0.3)


def draws(folder: Path, sampler: str, seed: int, trials: int, batch_size: int, stop_at_batch: int = 0,
          startup_trials: int = 10) -> list[Drawn]:
    """A search whose training is a formula: the trials it asked for, in order (a KeyboardInterrupt
    in its `stop_at_batch`-th batch, as Ctrl-C would)."""
    ranges = {"x": Range("uniform", 0.0, 1.0)}
    seen: list[Drawn] = []

    def train(batch):
        seen.extend(batch)
        if len(seen) > (stop_at_batch - 1) * batch_size and stop_at_batch:
            raise KeyboardInterrupt
        return {d.number: fake_objective(d) for d in batch}

    folder.mkdir(exist_ok=True)  # the sweep folder, which a real sweep has made
    search(open_study(folder, sampler, "none", seed, "maximize", 1, startup_trials), ranges, trials, batch_size, train)
    return seen


def test_the_sampler_is_seeded_so_a_search_repeats(tmp_path):
    first = draws(tmp_path / "a", "tpe", 3, trials=14, batch_size=2)
    again = draws(tmp_path / "b", "tpe", 3, trials=14, batch_size=2)
    other = draws(tmp_path / "c", "tpe", 4, trials=14, batch_size=2)
    assert first == again and first != other


def test_a_resumed_search_trains_only_its_interrupted_trials_then_goes_on(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        draws(tmp_path, "tpe", 0, trials=8, batch_size=2, stop_at_batch=3)  # trials 0-3 told, 4 and 5 left running
    resumed = draws(tmp_path, "tpe", 0, trials=8, batch_size=2)
    assert [d.number for d in resumed] == [4, 5, 6, 7]  # the interrupted two first, with their values, then new ones
    again = open_study(tmp_path, "tpe", "none", 0, "maximize", 1)
    assert counts(again) == {"completed": 8}
    assert [d.values for d in every_trial(again, {"x": Range("uniform", 0.0, 1.0)})][4:6] == [d.values for d in resumed[:2]]


def test_tpe_draws_at_random_for_its_startup_trials_then_models_them(tmp_path):
    """Its start-up trials are the random sampler's own draws (same seed); after them it models."""
    random = [d.values for d in draws(tmp_path / "random", "random", 5, trials=6, batch_size=1)]
    default = [d.values for d in draws(tmp_path / "default", "tpe", 5, trials=6, batch_size=1)]
    early = [d.values for d in draws(tmp_path / "early", "tpe", 5, trials=6, batch_size=1, startup_trials=3)]
    assert default == random  # 10 start-up trials: a search of 6 never leaves them
    assert early[:3] == random[:3] and early[3:] != random[3:]


def test_a_resumed_search_draws_values_of_its_own_not_its_first_ones_again(tmp_path):
    first = draws(tmp_path, "random", 0, trials=4, batch_size=1)
    more = draws(tmp_path, "random", 0, trials=8, batch_size=1)  # resumed after 4, told to go on to 8
    assert [d.number for d in more] == [4, 5, 6, 7]
    assert not {d.values["x"] for d in first} & {d.values["x"] for d in more}
    again = draws(tmp_path / "again", "random", 0, trials=4, batch_size=1) + draws(tmp_path / "again", "random", 0, trials=8, batch_size=1)
    assert again == first + more  # resumed at the same point, the same draws: the search still repeats


def test_a_search_whose_trials_keep_failing_stops_instead_of_drawing_on(tmp_path):
    """A failed trial spends no epoch: under a budget, a broken set-up would draw forever."""
    from convexp.search import STOP_AFTER_FAILURES, TrialsKeepFailing

    seen = []

    def train(batch):
        seen.extend(batch)
        return {d.number: "failed" if d.number != 1 else 0.5 for d in batch}  # one success resets the count

    with pytest.raises(TrialsKeepFailing) as stopped:
        search(open_study(tmp_path, "random", "none", 0, "maximize", 1), {"x": Range("uniform", 0.0, 1.0)}, 1000, 1,
               train, lambda planned: True)
    assert len(seen) == 2 + STOP_AFTER_FAILURES and stopped.value.last == 1 + STOP_AFTER_FAILURES
    assert counts(open_study(tmp_path, "random", "none", 0, "maximize", 1)) == {"completed": 1, "failed": 6}


def test_diverged_trials_are_answers_they_count_and_never_stop_the_search(tmp_path):
    """A loss that became NaN says something about the values drawn, not about the set-up."""
    seen = []

    def train(batch):
        seen.extend(batch)
        return {d.number: "diverged" if d.number < 7 else 0.5 for d in batch}

    search(open_study(tmp_path, "random", "none", 0, "maximize", 1), {"x": Range("uniform", 0.0, 1.0)}, 8, 1,
           train, lambda planned: True)
    assert len(seen) == 8  # 7 diverged in a row, no stop, and each counted towards the 8 trials
    assert counts(open_study(tmp_path, "random", "none", 0, "maximize", 1)) == {"diverged": 7, "completed": 1}


def test_a_sweep_stops_after_its_trials_keep_failing_and_says_why(tmp_path):
    empty = tmp_path / "no-mnist-here"
    empty.mkdir()
    result = invoke("sweep", TRAIN, "--space", LR, "--sampler", "random", "--trials", "50", "--epoch-budget", "100",
                    "--set", f"data.root={empty}", "--set", "data.download=false", "--out", str(tmp_path / "runs"), "-q")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: the search stopped: its last 5 trials failed one after another, "
                                                   "the last (p04-seed0) with: MNIST files under")
    study = only_run(tmp_path / "runs")
    assert sorted(child.name for child in study.glob("p*")) == [f"p0{i}-seed0" for i in range(5)]
    assert json.loads((study / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow(seconds=15)
def test_once_its_cause_is_fixed_a_failed_search_resumes_to_its_trials(tmp_path, mnist_root):
    """Failed trials are no answer: they do not count towards --trials, so resume draws on."""
    fixed_later = tmp_path / "data"
    (fixed_later / "MNIST").mkdir(parents=True)
    result = invoke("sweep", TRAIN, "--space", LR, "--sampler", "random", "--trials", "2", "--set", f"data.root={fixed_later}",
                    "--set", "data.download=false", "--set", "data.val_split=0.2", "--set", "train.epochs=1",
                    "--set", "train.max_batches=3", *SMOKE_EVAL, "--out", str(tmp_path / "runs"), "-q")
    assert result.returncode == 2 and "its last 5 trials failed one after another" in result.stderr
    (fixed_later / "MNIST" / "raw").symlink_to(mnist_root / "MNIST" / "raw")
    study = only_run(tmp_path / "runs")
    resumed = invoke("resume", str(study), "-q")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr
    assert [t.state.name for t in trials_of(study)] == ["FAIL"] * 5 + ["COMPLETE"] * 2
    assert json.loads((study / "summary.json").read_text())["status"] == "completed"


# -- real searches on mnist-mini --------------------------------------------------------------------


SHORT = ["--set", "train.epochs=2", "--set", "train.max_batches=10", *SMOKE_EVAL]


def points_of(study: Path) -> list[dict]:
    with (study / "points.csv").open() as f:
        return list(csv.DictReader(f))


def trials_of(study: Path):
    import optuna

    from convexp.search import STUDY_NAME, storage

    return optuna.load_study(study_name=STUDY_NAME, storage=storage(study)).get_trials()


@pytest.mark.slow(seconds=30)
def test_a_tpe_search_over_a_log_range_with_two_jobs_is_ranked_on_the_mean_over_seeds(tmp_path, mnist_root):
    result = invoke("sweep", TRAIN, "--space", LR, "--sampler", "tpe", "--trials", "3", "--seeds", "0,1", "--jobs", "2",
                    *mini(mnist_root), *SHORT, "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    study = only_run(tmp_path)
    points = points_of(study)
    assert sorted(p["point"] for p in points) == ["p00", "p01", "p02"]
    assert all(1e-4 <= float(p["train.lr"]) <= 1e-2 and p["runs"] == "2" and p["pruned"] == "0" for p in points)
    trials = {f"p{t.number:02d}": t for t in trials_of(study)}
    for point in points:  # the study was told the mean over seeds, the number points.csv ranks by
        per_seed = [max(float(r["val_accuracy"]) for r in csv.DictReader((study / f"{point['point']}-seed{s}" / "metrics.csv").open()))
                    for s in (0, 1)]
        assert float(point["best_val_accuracy_mean"]) == pytest.approx(statistics.fmean(per_seed))
        assert trials[point["point"]].value == pytest.approx(statistics.fmean(per_seed))
        assert trials[point["point"]].params["train.lr"] == pytest.approx(float(point["train.lr"]))
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best"]["point"] == points[0]["point"]
    assert summary["search"] == {"sampler": "tpe", "pruner": "none", "trials": 3, "study": "optuna-journal.log",
                                 "epoch_budget": 0, "startup_trials": 10, "epochs_trained": 3 * 2 * 2, "completed": 3, "pruned": 0, "failed": 0}
    assert (study / "best.yaml").is_file() and (study / "plots" / "best_val_accuracy_against_train_lr.png").is_file()
    if platform.machine() in ("x86_64", "AMD64"):  # the workers flushed denormals as the CLI does
        assert {json.loads(child.read_text())["cpu_denormals"] for child in study.glob("p*-seed*/summary.json")} \
            == {"flushed to zero"}


@pytest.mark.slow(seconds=15)
@pytest.mark.parametrize("jobs", ["1", "2"])  # here, and in worker processes reporting to the journal file
def test_a_diverging_learning_rate_is_pruned_after_its_first_epoch(tmp_path, mnist_root, jobs):
    # The random sampler seeded 1 draws 0.003, 0.01, then 3.0: two finished curves (the median's
    # MEDIAN_STARTUP_TRIALS), then a rate whose loss runs away (finite: ~12 after one epoch).
    result = invoke("sweep", TRAIN, "--space", "train.lr=choice(0.01, 0.003, 3.0)", "--sampler", "random",
                    "--set", "seed=1", "--seeds", "0", "--trials", "3", "--pruner", "median", "--select", "val_loss",
                    "--jobs", jobs, *mini(mnist_root), *SHORT, "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    study = only_run(tmp_path)
    points = {p["point"]: p for p in points_of(study)}
    assert points["p02"]["train.lr"] == "3.0", "the seeded random sampler drew otherwise: pick another seed"
    assert (points["p02"]["runs"], points["p02"]["pruned"], points["p02"]["failed"]) == ("0", "1", "0")
    pruned = study / "p02-seed0"
    summary = json.loads((pruned / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["pruned_after_epoch"] == 1 and "error" not in summary
    assert len(list(csv.DictReader((pruned / "metrics.csv").open()))) == 1  # its first epoch kept, no second
    assert [t.state.name for t in trials_of(study)] == ["COMPLETE", "COMPLETE", "PRUNED"]
    headline = json.loads((study / "summary.json").read_text())
    assert headline["status"] == "completed" and headline["search"]["pruned"] == 1
    assert headline["best"]["point"] != "p02"
    said = "p02-seed0 pruned after epoch 1: val_loss" if jobs == "1" else "[p02-seed0] pruned after"  # the child's line, or the study's
    assert said in result.stdout
    listing = invoke("runs", "--out", str(tmp_path))
    assert "(1 pruned)" in listing.stdout


@pytest.mark.slow(seconds=30)
def test_a_resumed_tpe_search_repeats_no_finished_trial(tmp_path, mnist_root):
    args = ["sweep", TRAIN, "--space", LR, "--sampler", "tpe", "--trials", "3", "--seeds", "0", *mini(mnist_root),
            "--set", "train.epochs=2", "--set", "train.max_batches=5", *SMOKE_EVAL]
    study = interrupted_then_resumed(args, tmp_path, batch=17)  # trial 0 (10 batches) told, trial 1 in its 2nd epoch
    trials = trials_of(study)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    first = json.loads((study / "p00-seed0" / "summary.json").read_text())
    assert "resumed_at" not in first  # finished before Ctrl-C: not trained again
    second = json.loads((study / "p01-seed0" / "summary.json").read_text())
    assert "resumed_at" in second and second["status"] == "completed"  # interrupted: continued from its checkpoint
    log = (study / "p01-seed0" / "log.txt").read_text()
    assert "resuming after epoch 1 of 2" in log
    assert sorted(p["point"] for p in points_of(study)) == ["p00", "p01", "p02"]


def test_the_pruning_watcher_reports_every_epoch_and_stops_a_trial_behind_the_median(tmp_path):
    from convexp.callbacks import EpochEnd
    from convexp.search import PruneWatcher, Pruning, TrialPruned

    study = open_study(tmp_path, "random", "median", 0, "minimize", 3)
    for losses in ([2.0, 1.5, 1.0], [2.2, 1.6, 1.1]):  # the median's two finished curves
        trial = study.ask()
        for step, loss in enumerate(losses):
            trial.report(loss, step)
        study.tell(trial, losses[-1])
    ahead, behind = study.ask(), study.ask()

    def epoch(watcher, n: int, loss: float) -> None:
        watcher.on_epoch_end(EpochEnd(None, n, 3, {"val_loss": loss, "val_accuracy": 0.5}, 0.1))

    fine = PruneWatcher(Pruning(str(tmp_path), ahead._trial_id, "median", "val_loss", 3, reports=True))
    epoch(fine, 1, 1.9)
    epoch(fine, 2, 1.4)
    with pytest.raises(TrialPruned, match="pruned after epoch 1: val_loss 12.0000"):
        epoch(PruneWatcher(Pruning(str(tmp_path), behind._trial_id, "median", "val_loss", 3, reports=True)), 1, 12.0)
    trials = open_study(tmp_path, "random", "median", 0, "minimize", 3).trials
    assert trials[2].intermediate_values == {0: 1.9, 1: 1.4} and trials[3].intermediate_values == {0: 12.0}
    quiet = PruneWatcher(Pruning(str(tmp_path), ahead._trial_id, "median", "val_loss", 3, reports=False))
    epoch(quiet, 3, 9.0)  # a later seed of the trial only asks; the last epoch is never pruned
    assert open_study(tmp_path, "random", "median", 0, "minimize", 3).trials[2].intermediate_values == {0: 1.9, 1: 1.4}


def test_hyperband_stops_trials_behind_their_bracket_before_their_last_epoch(tmp_path):
    """Each trial worse than every one before it: hyperband (4 epochs, two brackets) never stops
    the first trial (nothing to compare it with) and stops some later ones at a rung before their
    last epoch (the watcher never stops a trial at its last: it has finished)."""
    import optuna

    from convexp.callbacks import EpochEnd
    from convexp.search import PruneWatcher, Pruning, TrialPruned

    study = open_study(tmp_path, "random", "hyperband", 0, "minimize", 4)
    stopped = []
    for n in range(8):
        trial = study.ask()
        watcher = PruneWatcher(Pruning(str(tmp_path), trial._trial_id, "hyperband", "val_loss", 4, reports=True))
        try:
            for epoch in range(1, 5):
                watcher.on_epoch_end(EpochEnd(None, epoch, 4, {"val_loss": 1.0 + n, "val_accuracy": 0.5}, 0.1))
            study.tell(trial, 1.0 + n)
        except TrialPruned as exc:
            stopped.append((n, exc.epoch))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert stopped, "hyperband stopped no trial, though each was behind all before it"
    assert 0 not in dict(stopped) and all(epoch < 4 for _, epoch in stopped)
    states = [t.state.name for t in open_study(tmp_path, "random", "hyperband", 0, "minimize", 4).trials]
    assert states.count("PRUNED") == len(stopped)


@pytest.mark.slow(seconds=10)
def test_an_epoch_budget_stops_drawing_trials_once_spent(tmp_path, mnist_root):
    """2 epochs a trial, a budget of 5: the third trial starts with 4 spent, none after it."""
    result = invoke("sweep", TRAIN, "--space", LR, "--sampler", "random", "--trials", "10", "--epoch-budget", "5",
                    "--seeds", "0", *mini(mnist_root), *SHORT, "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    study = only_run(tmp_path)
    assert sorted(p["point"] for p in points_of(study)) == ["p00", "p01", "p02"]
    search = json.loads((study / "summary.json").read_text())["search"]
    assert (search["epoch_budget"], search["epochs_trained"], search["completed"]) == (5, 6, 3)


@pytest.mark.slow(seconds=20)
def test_a_completed_search_given_more_trials_on_resume_trains_only_the_new_ones(tmp_path, mnist_root):
    import yaml

    result = invoke("sweep", TRAIN, "--space", LR, "--sampler", "tpe", "--trials", "2", "--seeds", "0",
                    *mini(mnist_root), "--set", "train.epochs=1", "--set", "train.max_batches=5", *SMOKE_EVAL,
                    "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    study = only_run(tmp_path)
    again = invoke("resume", str(study), "--trials", "2")
    assert again.returncode == 2 and f"{study} completed its search with 2 trials (failed ones aside): pass --trials above 2" in again.stderr
    spent = invoke("resume", str(study), "--trials", "4", "--epoch-budget", "2")  # 2 trials x 1 epoch spent it
    assert spent.returncode == 2 and "has already trained 2 epochs, all of --epoch-budget 2: pass --epoch-budget above 2" in spent.stderr
    negative = invoke("resume", str(study), "--trials", "-1")
    assert negative.returncode == 2 and "--trials must be a whole number, 0 or more" in negative.stderr
    asked = invoke("resume", str(study), "--trials", "600")
    assert asked.returncode == 2 and "this search would hold 600 points x 1 seed(s) = 600 runs: pass --yes" in asked.stderr
    more = invoke("resume", str(study), "--trials", "4", "-q")
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr
    assert [t.state.name for t in trials_of(study)] == ["COMPLETE"] * 4
    points = {p["point"]: float(p["train.lr"]) for p in points_of(study)}
    assert sorted(points) == ["p00", "p01", "p02", "p03"]
    assert len(set(points.values())) == 4  # the resumed sampler drew new values, not its first ones again
    for old in ("p00-seed0", "p01-seed0"):  # finished before: read back, not trained again
        assert "resumed_at" not in json.loads((study / old / "summary.json").read_text())
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "completed" and "resumed_at" in summary
    assert (summary["search"]["trials"], summary["search"]["completed"]) == (4, 4)
    assert yaml.safe_load((study / "config.yaml").read_text())["trials"] == 4  # a later resume goes on from 4


def test_trials_on_resume_are_for_a_search_only(tmp_path, mnist_root):
    result = invoke("sweep", TRAIN, "--grid", "train.lr=[0.001]", *mini(mnist_root), "--set", "train.epochs=1",
                    "--set", "train.max_batches=2", *SMOKE_EVAL, "--out", str(tmp_path), "--name", "grid", "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    folder = only_run(tmp_path)
    refused = invoke("resume", str(folder), "--trials", "5")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert f"--trials and --epoch-budget change how far a search goes (a sweep with --sampler random or tpe); {folder} is not a search" in refused.stderr


def test_a_search_whose_points_no_longer_check_is_left_as_it_was_by_resume_trials(tmp_path, mnist_root):
    """Every range's ends are checked before config.yaml takes the new limits or the status moves."""
    import yaml

    result = invoke("sweep", TRAIN, "--space", LR, "--sampler", "random", "--trials", "1", "--seeds", "0",
                    *mini(mnist_root), "--set", "train.epochs=1", "--set", "train.max_batches=2", *SMOKE_EVAL,
                    "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    study = only_run(tmp_path)
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["base"]["train"]["no_such_key"] = 1  # as a folder written by a version with other keys
    (study / "config.yaml").write_text(yaml.safe_dump(config))
    before = (study / "config.yaml").read_text()
    refused = invoke("resume", str(study), "--trials", "2")
    assert refused.returncode == 2 and "unknown config key 'train.no_such_key'" in refused.stderr
    assert (study / "config.yaml").read_text() == before
    assert json.loads((study / "summary.json").read_text())["status"] == "completed"

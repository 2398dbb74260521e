"""Runs the ecosystem can read: TensorBoard events read back with TensorBoard's own
EventAccumulator, MLflow runs with mlflow's own MlflowClient on a real SQLite store; shell
completion and --version."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import (
    REPO,
    SMOKE_EVAL,
    interrupted_then_resumed,
    invoke,
    mini,
    only_run,
)

pytest.importorskip("tensorboard", reason="TensorBoard is an optional extra: make setup installs it (pip install -e '.[log]')")
pytest.importorskip("mlflow", reason="the MLflow client is an optional extra: make setup installs it (pip install -e '.[log]')")

pytestmark = pytest.mark.slow(seconds=8)


def events(run):
    """{tag: [(step, value), ...]} of the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def mlflow_run(store, run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    return client, client.get_run(json.loads((run / "summary.json").read_text())["mlflow_run_id"])


def store_of(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


SHORT = ["--set", "train.batch_size=64", "--set", "train.max_batches=10", *SMOKE_EVAL]


def test_a_run_shows_in_tensorboard_and_mlflow(tmp_path, mnist_root):
    store = store_of(tmp_path)
    result = invoke("train-mnist", *mini(mnist_root), *SHORT, "--set", "train.epochs=2", "--set", f"log.mlflow={store}",
                    "--out", str(tmp_path / "runs"), "-q")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path / "runs")
    scalars = events(run)
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [step for step, _ in scalars["accuracy/val"]] == [1, 2]
    assert [round(v, 6) for _, v in scalars["accuracy/val"]] == [round(float(r.split(",")[4]), 6) for r in rows]
    assert len(scalars["batch/train_loss"]) == 20 and {"loss/train", "lr", "seconds_per_epoch", "accuracy/test"} <= set(scalars)
    client, mlrun = mlflow_run(store, run)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == run.name
    assert mlrun.data.params["train.lr"] == "0.001" and mlrun.data.params["train.batch_size"] == "64"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "val_accuracy")] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert mlrun.data.metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id)} == {"summary.json", "config.yaml", "plots"}
    assert client.get_experiment(mlrun.info.experiment_id).name == "train-mnist"
    assert not (REPO / "mlruns").exists()  # artifacts beside the SQLite store, not wherever the command ran


def test_a_studys_children_in_workers_log_each_and_nest_under_the_study(tmp_path, mnist_root):
    store = store_of(tmp_path)
    result = invoke("sweep-batch", *mini(mnist_root), *SHORT, "--set", "train.epochs=1", "--set", "sweep.batch_sizes=[32, 64]",
                    "--set", "sweep.seeds=[0]", "--set", f"log.mlflow={store}", "--jobs", "2", "--threads", "1",
                    "--out", str(tmp_path / "runs"), "-q")
    assert result.returncode == 0, result.stderr
    study = only_run(tmp_path / "runs")
    client, parent = mlflow_run(store, study)
    assert parent.info.status == "FINISHED"
    for child in ("bs32-seed0", "bs64-seed0"):
        assert [step for step, _ in events(study / child)["accuracy/val"]] == [1]
        _, nested = mlflow_run(store, study / child)
        assert nested.data.tags["mlflow.parentRunId"] == parent.info.run_id and nested.info.status == "FINISHED"


def test_an_interrupted_run_resumes_in_the_same_mlflow_run_without_doubling_epochs(tmp_path, mnist_root):
    store = store_of(tmp_path)
    args = ["train-mnist", *mini(mnist_root), *SHORT, "--set", "train.epochs=3", "--set", f"log.mlflow={store}"]
    run = interrupted_then_resumed(args, tmp_path / "runs", batch=15)  # in epoch 2 of 10 batches each
    client, mlrun = mlflow_run(store, run)
    assert mlrun.info.status == "FINISHED" and len(client.search_runs([mlrun.info.experiment_id])) == 1
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "val_accuracy")] == [1, 2, 3]
    assert [step for step, _ in events(run)["accuracy/val"]] == [1, 2, 3]


def test_a_failed_run_is_failed_in_mlflow_and_an_unreachable_uri_is_one_line_before_training(tmp_path, mnist_root):
    store = store_of(tmp_path)
    result = invoke("train-mnist", "--set", f"data.root={tmp_path}/none", "--set", "data.download=false",
                    "--set", f"log.mlflow={store}", "--out", str(tmp_path / "failed"), "-q")
    assert result.returncode == 2 and "MNIST files" in result.stderr
    _, mlrun = mlflow_run(store, only_run(tmp_path / "failed"))
    assert mlrun.info.status == "FAILED"
    result = invoke("train-mnist", *mini(mnist_root), "--set", "log.mlflow=http://127.0.0.1:9", "--out", str(tmp_path / "gone"))
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "log.mlflow='http://127.0.0.1:9' cannot be reached" in line
    run = only_run(tmp_path / "gone")
    assert json.loads((run / "summary.json").read_text())["status"] == "failed" and not (run / "metrics.csv").exists()


def test_a_logger_that_fails_mid_run_costs_no_result(tmp_path, mnist_root, monkeypatch):
    from convexp.loggers import TensorBoardLogger

    def broken(self, event):
        raise OSError("no space left for events")

    monkeypatch.setattr(TensorBoardLogger, "on_epoch_end", broken)
    result = invoke("train-mnist", *mini(mnist_root), *SHORT, "--set", "train.epochs=2", "--set", "log.tensorboard=true",
                    "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("warning: the tensorboard logger stopped (OSError: no space left for events)") == 1
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "completed" and "no space left" in summary["loggers_stopped"]["tensorboard"]


@pytest.mark.parametrize("words,expected", [
    ("convexp train-mnist --set train.l", ["train.lr=", "train.label_smoothing="]),
    ("convexp sweep varres-pool --grid model.w", ["model.widths="]),
    ("convexp sw", ["sweep-batch", "sweep"]),
])
def test_the_shell_completes_commands_and_config_keys(words, expected):
    env = {**os.environ, "_CONVEXP_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    completed = subprocess.run([sys.executable, "-m", "convexp"], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert completed.stdout.split() == expected, completed.stderr


def test_version_names_convexp_torch_and_the_device():
    result = invoke("--version")
    assert result.returncode == 0 and result.stdout.startswith("convexp 0.1.0, torch ")
    assert "CUDA" in result.stdout  # the device, or that there is none

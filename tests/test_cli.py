"""The command line as a user meets it: subprocess runs, the run folder, one-line errors."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.helpers import REPO, invoke, mini, only_run, run_cli

RUN_FILES = ["config.yaml", "metrics.csv", "batches.csv", "summary.json", "model.pt", "log.txt",
             "plots/loss.png", "plots/accuracy.png", "plots/batch_loss.png"]



@pytest.mark.slow
def test_train_mnist_writes_a_complete_run_folder(tmp_path, mnist_root):
    result = run_cli("train-mnist", "--config", "configs/train-mnist.yaml", *mini(mnist_root),
                     "--set", "train.epochs=1", "--set", "model.conv=unfold", "--out", str(tmp_path), "--name", "smoke", "-q")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    assert run.name.endswith("-train-mnist-smoke")
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["parameters"] == 29_066 and summary["seed"] == 0 and summary["device"] == "cpu"
    assert summary["test_accuracy"] > 0.9 and summary["seconds_per_epoch"] > 0
    assert summary["torch_version"] and "torchvision_version" in summary
    assert summary["data"] == {"root": str(mnist_root), "train": 6400, "val": 1600, "test": 2000}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["epochs"] == 1 and config["model"]["conv"] == "unfold"
    assert (run / "metrics.csv").read_text().splitlines()[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy"
    assert len((run / "batches.csv").read_text().splitlines()) == 1 + 400  # 6,400 digits / batch 16
    assert "epoch 1/1" in (run / "log.txt").read_text()
    assert not (run / "checkpoint.pt").exists()
    assert "test accuracy" in result.stdout


def test_debug_flag_shows_the_traceback(tmp_path):
    """--debug lets the error out of main(), to Python, which prints its traceback."""
    from convexp.errors import ConvexpError

    with pytest.raises(ConvexpError, match="unknown config key 'train.epoch'"):
        invoke("train-mnist", "--set", "train.epoch=2", "--out", str(tmp_path), "--debug")
    assert invoke("train-mnist", "--set", "train.epoch=2", "--out", str(tmp_path)).returncode == 2  # without: one line


def test_failed_data_load_leaves_a_failed_run_not_a_complete_one(tmp_path):
    result = invoke("train-mnist", "--set", "data.root=/nonexistent", "--set", "data.download=false", "--out", str(tmp_path))
    assert result.returncode == 2
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "MNIST files" in summary["error"]
    assert "MNIST files" in (run / "log.txt").read_text()
    assert not (run / "model.pt").exists()


def test_help_lists_the_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0 and "train-mnist" in result.stdout


@pytest.mark.slow(seconds=3)  # six fresh Pythons
def test_installed_console_script_is_the_module_cli():
    """`convexp` (the console script pyproject.toml installs) is `python -m convexp`: the same
    help, and the same one-line error and exit code for a bad option."""
    import shutil
    import subprocess

    exe = shutil.which("convexp") or str(REPO / ".venv" / "bin" / "convexp")
    env = {**os.environ, "COLUMNS": "200"}
    for args in (["--help"], ["train-mnist", "--help"], ["train-mnist", "--bogus"]):  # none imports torch
        script = subprocess.run([exe, *args], capture_output=True, text=True, cwd=REPO, env=env)
        module = run_cli(*args)
        assert (script.returncode, script.stdout, script.stderr) == (module.returncode, module.stdout, module.stderr), args
    assert script.returncode == 2 and "No such option: --bogus" in script.stderr

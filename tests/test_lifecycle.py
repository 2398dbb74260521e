"""One owner of a run's life: status set once, logs with the tables, children that know their study."""

from __future__ import annotations

import stat

import pytest
import torch

from convexp.config import Train
from convexp.console import Reporter
from convexp.errors import ConvexpError
from convexp.experiments.count_params import CountParamsConfig
from convexp.experiments.train_mnist import TrainMnistConfig
from convexp.lifecycle import open_run
from convexp.runs import RunFolder
from tests.helpers import invoke, tiny_splits, train_into

CPU = torch.device("cpu")


def statuses_written(monkeypatch) -> list[str]:
    """Every status any code writes into any summary.json from now on."""
    written = []
    original = RunFolder.update_summary

    def spy(self, **fields):
        if "status" in fields:
            written.append(fields["status"])
        return original(self, **fields)

    monkeypatch.setattr(RunFolder, "update_summary", spy)
    return written


def test_a_trained_run_is_marked_completed_once(tmp_path, monkeypatch):
    written = statuses_written(monkeypatch)
    run, _ = train_into(tmp_path, tiny_splits(), Train(epochs=2, batch_size=16))
    assert written == ["completed"]  # `running` was the first summary itself; the training loop sets none
    assert run.read_summary()["status"] == "completed"


@pytest.mark.parametrize(("error", "status"), [(ConvexpError("bad input: fix it"), "failed"),
                                               (RuntimeError("a bug"), "failed"), (KeyboardInterrupt(), "interrupted")])
def test_every_way_out_sets_one_honest_status(tmp_path, monkeypatch, error, status):
    written = statuses_written(monkeypatch)
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(type(error)), open_run(run, "count-params", CountParamsConfig(), CPU, Reporter(quiet=True)):
        raise error
    summary = run.read_summary()
    assert written == [status] and summary["status"] == status
    if status == "failed":
        assert "a bug" in summary["error"] or "bad input" in summary["error"]


def test_a_child_run_names_its_study_and_resume_sends_you_there(tmp_path):
    parent = RunFolder(tmp_path / "study")
    parent.path.mkdir()
    child = parent.child("bs16-seed0")
    with pytest.raises(KeyboardInterrupt):
        with open_run(child, "sweep-batch", TrainMnistConfig(), CPU, Reporter(quiet=True), name="bs16-seed0", parent=parent):
            raise KeyboardInterrupt
    assert child.read_summary()["child_of"] == "study"
    result = invoke("resume", str(child.path))
    assert result.returncode == 2 and f"is one run of the study {parent.path}" in result.stderr
    assert f"convexp resume {parent.path}" in result.stderr


def test_log_holds_the_result_tables_and_names_with_brackets_survive(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # a table row on one line
    result = invoke("count-params", "--out", str(tmp_path), "--name", "[lr=0.1]", "-q")
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    assert run.name.endswith("-count-params-[lr=0.1]")
    log = (run / "log.txt").read_text()
    assert "MNISTConvNet on 28x28 input: 29,066 parameters" in log and "conv1 3x3 + ReLU" in log
    listing = invoke("runs", "--out", str(tmp_path))
    assert f"{run.name} " in listing.stdout  # Rich markup is not read from user strings


def test_run_files_are_readable_like_the_plots(tmp_path):
    result = invoke("count-params", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    for name in ("summary.json", "config.yaml", "params.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) & 0o044 == 0o044, name  # group and others may read


def test_a_missing_default_config_is_an_error_not_silent_defaults(tmp_path, monkeypatch):
    from convexp.cli import main

    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert main(["augment", "--out", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()


def test_validation_errors_leave_no_run_folder(tmp_path):
    result = invoke("count-params", "--channels", "0", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2 and "channels (N) must be at least 1 and at most 100,000; got 0" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_second_signal_never_cuts_short_the_saving_of_any_level():
    """A study (outer) and its child (inner): after the first Ctrl-C, a second one while the
    study writes its status is ignored; once the study is done, Ctrl-C works as before."""
    import os
    import signal

    from convexp.lifecycle import interrupts_as_keyboard_interrupt

    original = signal.getsignal(signal.SIGINT)
    saved_after_second_signal = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_as_keyboard_interrupt():  # the study
            try:
                with interrupts_as_keyboard_interrupt():  # its child
                    os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGINT)  # pressed again while the study saves
                saved_after_second_signal = True
                raise
    assert saved_after_second_signal
    assert signal.getsignal(signal.SIGINT) is original


def test_running_out_of_memory_is_one_line_naming_the_fix():
    from convexp.lifecycle import out_of_memory

    error = out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                                       "you tried to allocate 29491200000 bytes. Error code 12"))
    assert "asked for 27.5 GiB at once" in str(error) and "lower model.channels" in str(error)
    assert out_of_memory(RuntimeError("shape mismatch")) is None
    # the fix names the keys the run's own config has
    from convexp.experiments.bench import BenchConfig
    from convexp.experiments.train_mnist import TrainMnistConfig
    from convexp.experiments.varres_pool import VarresPoolConfig

    oom = RuntimeError("DefaultCPUAllocator: can't allocate memory")
    assert str(out_of_memory(oom, BenchConfig())).endswith("; lower batch_sizes")
    assert str(out_of_memory(oom, TrainMnistConfig())).endswith("; lower train.batch_size / train.eval_batch_size")
    assert str(out_of_memory(oom, VarresPoolConfig())).endswith(
        "; lower model.channels / model.widths / train.batch_size / train.eval_batch_size")

"""The study's progress line: work planned by multiply-adds, ETA from the rate measured so far."""

from __future__ import annotations

import pytest

from convexp import progress
from convexp.models import MNISTConvNet, VariableInputNet
from convexp.progress import StudyProgress, conv_net_macs, duration


def count_conv_macs(model, size: int) -> int:
    """Multiply-adds of the conv layers, counted by hooks on a real forward pass."""
    import torch

    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    for conv in (model.features.conv1, model.features.conv2, model.features.conv3):
        conv.register_forward_hook(hook)
    model(torch.zeros(1, 1, size, size))
    return total


@pytest.mark.parametrize(("model", "last", "size"), [(MNISTConvNet(), 64, 28), (VariableInputNet(81), 81, 64),
                                                     (VariableInputNet(81), 81, 48)])
def test_macs_match_a_real_forward_pass(model, last, size):
    assert conv_net_macs(last, size) == count_conv_macs(model, size)


def test_eta_from_the_measured_rate(monkeypatch):
    clock = iter([0.0, 10.0, 10.0, 10.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    study = StudyProgress({"kept": 50.0, "a": 20.0, "b": 30.0}, {"kept": 1, "a": 2, "b": 3})  # clock 0
    study.keep("kept")
    study.begin("a")
    line = study.epoch_finished()  # half of a (10 units) in 10 s: the 40 left take 40 s
    assert line == "study 60%, 10s elapsed, ETA 40s"


def test_a_resumed_child_cannot_push_a_step_past_its_work():
    study = StudyProgress({"a": 10.0}, {"a": 1})
    study.begin("a")
    study.epoch_finished()
    study.epoch_finished()  # one more epoch than planned
    study.end("a")
    assert study.done == 10.0


def test_duration_text():
    assert [duration(s) for s in (5, 75, 3600 + 120)] == ["5s", "1m15s", "1h02m"]

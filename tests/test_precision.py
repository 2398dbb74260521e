"""train.precision: bf16 for the forward pass and the loss, float32 weights; `auto` only where the
device has bf16 units; the hand-written conv under autocast; a resumed bf16 run repeats itself."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from convexp import autograd, precision
from tests.helpers import (
    SMOKE_EVAL,
    assert_same_files,
    interrupted_then_resumed,
    invoke,
    mini,
    only_run,
    run_cli,
)


def test_auto_takes_bf16_only_where_the_cpu_has_bf16_units(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert precision.resolve("auto", cpu) == (None, "auto: the CPU has no bf16 units (avx512_bf16, amx_bf16)")
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert precision.resolve("auto", cpu) == (torch.bfloat16, "auto: the CPU has amx_bf16")
    assert precision.resolve("fp32", cpu)[0] is None and precision.resolve("bf16", cpu)[0] is torch.bfloat16


@pytest.mark.parametrize("algorithm", ["rows", "reference"])
def test_the_hand_written_conv_under_autocast_computes_in_bf16_and_returns_float32_gradients(algorithm):
    """A layer's bf16 step against F.conv2d's own bf16 step (autocast's): the same result up to
    bf16 rounding, and the float32 weights get float32 gradients."""
    x, w, b = torch.randn(8, 16, 14, 14), torch.randn(32, 16, 3, 3) * 0.1, torch.randn(32) * 0.1
    grad = torch.randn(8, 32, 14, 14)

    def step(conv):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(*leaves)
        out.backward(grad.to(out.dtype))
        return [out.detach().float(), *(t.grad for t in leaves)], out.dtype

    (ours, dtype), (theirs, native_dtype) = step(lambda *t: autograd.conv2d(*t, padding=1, algorithm=algorithm)), \
        step(lambda *t: F.conv2d(*t, padding=1))
    assert dtype == native_dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in ours[1:])
    for name, a, c in zip(("forward", "x", "weight", "bias"), ours, theirs):
        assert float((a - c).abs().max() / c.abs().max()) < 2e-2, name  # bf16 keeps 8 bits: about 0.4% a rounding


def test_a_bf16_step_of_the_hand_written_net_matches_the_native_nets():
    from convexp.models import MNISTConvNet

    images, labels = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    losses = {}
    for conv in ("native", "unfold"):
        torch.manual_seed(0)
        model = MNISTConvNet(conv)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        losses[conv] = (float(loss), model.fc1.weight.grad)
    assert losses["unfold"][0] == pytest.approx(losses["native"][0], rel=1e-2)
    assert torch.allclose(losses["unfold"][1], losses["native"][1], rtol=5e-2, atol=1e-3)


BF16 = ["train-mnist", "--set", "train.precision=bf16", "--set", "train.epochs=2", "--set", "train.batch_size=64",
        "--set", "train.max_batches=10", *SMOKE_EVAL]


@pytest.mark.slow(seconds=6)
def test_a_bf16_run_says_so_and_resumes_to_the_same_bytes(tmp_path, mnist_root):
    args = [*BF16, *mini(mnist_root)]
    straight = invoke(*args, "--out", str(tmp_path / "straight"), "-q")
    assert straight.returncode == 0, straight.stderr
    run = only_run(tmp_path / "straight")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["precision"], summary["precision_reason"]) == ("bf16", "bf16: asked for")
    assert summary["final"]["val_accuracy"] > 0.3  # it learns (10 batches of 64)
    assert "bf16" in invoke("runs", "--out", str(tmp_path / "straight")).stdout
    resumed = interrupted_then_resumed(args, tmp_path / "resumed", batch=15)
    assert_same_files(resumed, run)


def test_an_unknown_precision_is_one_line(tmp_path):
    result = invoke("train-mnist", "--set", "train.precision=fp16", "--out", str(tmp_path))
    assert result.returncode == 2 and "config key 'train.precision' must be one of fp32, bf16, auto; got 'fp16'" in result.stderr


DENORMALS_IN_TWO_THREADS = """
import sys, torch
from convexp.precision import denormal_arithmetic, flush_denormals
torch.set_num_threads(2)
if sys.argv[1] == "late":
    torch.ones(1 << 22).sum()  # a parallel operation first: torch's second thread starts with IEEE
print(flush_denormals(), denormal_arithmetic(), sep="|")
"""


@pytest.mark.parametrize("setting, when, said", [
    ("1", "first", "True|flushed to zero"),
    ("0", "first", "False|IEEE (gradual underflow)"),
    (" Off", "first", "False|IEEE (gradual underflow)"),
    ("1", "late", "True|mixed: flushed in some threads only"),  # why convexp sets it before any tensor operation
])
def test_a_process_flushes_denormals_in_every_thread_unless_told_not_to(setting, when, said):
    """Set before any tensor operation, the flag reaches both of torch's threads; set after one,
    the second thread keeps IEEE, and the record says so. CONVEXP_FLUSH_DENORMALS=0 (or off)
    keeps IEEE's gradual underflow."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("torch.set_flush_denormal works on x86 only")
    result = subprocess.run([sys.executable, "-c", DENORMALS_IN_TWO_THREADS, when], capture_output=True, text=True,
                            env={**os.environ, "CONVEXP_FLUSH_DENORMALS": setting, "OMP_NUM_THREADS": "2"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == said


@pytest.mark.parametrize("setting, recorded", [("1", "flushed to zero"), ("0", "IEEE (gradual underflow)")])
def test_every_run_records_whether_its_cpu_flushed_denormals(tmp_path, setting, recorded):
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("torch.set_flush_denormal works on x86 only")
    result = run_cli("count-params", "--out", str(tmp_path), "-q", env={"CONVEXP_FLUSH_DENORMALS": setting})
    assert result.returncode == 0, result.stderr
    assert json.loads((only_run(tmp_path) / "summary.json").read_text())["cpu_denormals"] == recorded

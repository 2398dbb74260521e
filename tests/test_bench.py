"""The bench command: its FLOP count and its output files (timings are shown, never asserted)."""

from __future__ import annotations

import json

import pytest

from convexp.benchmark import layer_flops, step_flops
from tests.helpers import invoke, only_run


def test_step_flops_by_hand():
    conv1 = 2 * 1 * 9 * 16 * 28 * 28
    conv2 = 2 * 16 * 9 * 32 * 14 * 14
    conv3 = 2 * 32 * 9 * 64 * 7 * 7
    fc1 = 2 * 576 * 10
    # forward once, backward twice, but conv1 computes no gradient for its input
    assert step_flops(1) == 3 * (conv1 + conv2 + conv3 + fc1) - conv1
    assert step_flops(16) == 16 * step_flops(1)


def test_layer_flops_add_up_to_the_step():
    layers = layer_flops(8)
    assert layers["conv1"] == 8 * 2 * (2 * 9 * 16 * 28 * 28)  # forward and grad of weight only
    assert layers["conv2"] == 8 * 3 * (2 * 16 * 9 * 32 * 14 * 14)
    assert sum(layers.values()) == step_flops(8)


def test_bench_writes_rows_ratios_and_plot(tmp_path):
    result = invoke("bench", "--set", "batch_sizes=[2]", "--set", "threads=[1]", "--set", "min_run_time=0.01",
                     "--set", "rounds=1", "--set", "loop_digits=64", "--set", "loop_repeats=1", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    data = json.loads((run / "bench.json").read_text())
    whats = {(r["conv"], r["what"]) for r in data["rows"]}
    assert ("unfold", "training step") in whats and ("native", "conv2 fwd+bwd") in whats
    unfold_step = next(r for r in data["rows"] if r["conv"] == "unfold" and r["what"] == "training step")
    assert unfold_step["ms"] > 0 and unfold_step["ratio"] > 0 and unfold_step["gflops"] > 0
    assert data["loop"]["ratio"] > 0
    assert (run / "plots" / "training_step.png").is_file()
    assert "ratio = hand-written / native" in result.stdout

    # Each hand-written layer's matmuls alone are compared with the native layer, and the step
    # floor is the native step plus, per layer, (matmuls alone - native layer).
    ms = {(r["conv"], r["what"]): r for r in data["rows"] if r["precision"] == "fp32"}
    conv2_floor = ms[("unfold", "conv2 matmuls alone")]
    assert conv2_floor["ratio"] == pytest.approx(conv2_floor["ms"] / ms[("native", "conv2 fwd+bwd")]["ms"])
    expected = ms[("native", "training step")]["ms"] + sum(
        ms[("unfold", f"{name} matmuls alone")]["ms"] - ms[("native", f"{name} fwd+bwd")]["ms"] for name in ("conv1", "conv2", "conv3"))
    assert ms[("unfold", "training step, matmul floor")]["ms"] == pytest.approx(expected)

    report = invoke("report", str(run), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| 1 | 2 | fp32 | unfold | training step, matmul floor |" in markdown


def test_bench_times_each_item_at_both_precisions_and_says_bf16s_speed_up(tmp_path):
    result = invoke("bench", "--set", "batch_sizes=[2]", "--set", "threads=[1]", "--set", "min_run_time=0.01",
                    "--set", "precisions=[fp32, bf16]", "--set", "rounds=1", "--set", "loop_digits=64",
                    "--set", "loop_repeats=1", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    rows = json.loads((only_run(tmp_path) / "bench.json").read_text())["rows"]
    ms = {(r["precision"], r["conv"], r["what"]): r for r in rows}
    for conv in ("native", "unfold"):
        for what in ("conv2 fwd+bwd", "training step"):
            bf16 = ms[("bf16", conv, what)]
            assert bf16["bf16_speedup"] == pytest.approx(ms[("fp32", conv, what)]["ms"] / bf16["ms"])
    assert ms[("bf16", "unfold", "training step")]["ratio"] == pytest.approx(
        ms[("bf16", "unfold", "training step")]["ms"] / ms[("bf16", "native", "training step")]["ms"])
    # the matmuls-alone floor is float32 MKL's: measured at fp32 only
    assert {p for p, _, what in ms if "matmul" in what} == {"fp32"}
    assert "bf16 speed-up" in result.stdout


def test_the_bench_at_bf16_runs_the_forward_under_autocast():
    import torch

    from convexp.benchmark import workloads_for

    items = workloads_for("unfold", 0, 2, torch.device("cpu"), precision="bf16")
    layer_step = items["conv2 fwd+bwd"]
    layer, x = layer_step.__defaults__
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    layer_step()
    handle.remove()
    assert seen == [torch.bfloat16] and layer.weight.grad.dtype == torch.float32


def test_training_step_workload_never_frees_the_layer_workloads_grads():
    """A layer item accumulates into its layer's .grad, memory that its captured CUDA graph
    (cuda_graphs=true) writes into at every replay: the training step's
    zero_grad(set_to_none=True) must not free it (on an H200 it did: a device-side assert)."""
    import torch

    from convexp.benchmark import workloads_for

    items = workloads_for("unfold", 0, 4, torch.device("cpu"))
    layer = items["conv2 fwd+bwd"].__defaults__[0]  # layer_step(layer=..., x=...)
    items["conv2 fwd+bwd"]()
    grad = layer.weight.grad
    items["training step"]()
    assert layer.weight.grad is grad

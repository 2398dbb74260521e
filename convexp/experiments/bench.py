"""`convexp bench`: hand-written vs native convolution, and the training loop vs a bare loop.

Timings come from torch.utils.benchmark (medians of blocked runs, warm-up included, CUDA
synchronised). Random inputs: the bench needs no data set.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from convexp import plots
from convexp.config import BenchConfig
from convexp.console import Reporter, print_table
from convexp.data import Split
from convexp.models import MNISTConvNet, to_device
from convexp.runs import RunFolder
from convexp.train import make_generators, train_epoch

# Input of each conv layer of MNISTConvNet: (channels, size); every one 3x3, padding 1.
CONV_LAYERS = {"conv1": (1, 16, 28), "conv2": (16, 32, 14), "conv3": (32, 64, 7)}


def run(config: BenchConfig, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    previous_threads = torch.get_num_threads()
    rows = []
    try:
        for threads in config.threads:
            torch.set_num_threads(threads)
            for batch_size in config.batch_sizes:
                rows += measure_point(config, device, threads, batch_size, reporter)
        torch.set_num_threads(previous_threads)
        loop = measure_loop(config, device)
    finally:
        torch.set_num_threads(previous_threads)
    add_ratios(rows)
    run.write_json("bench.json", {"device": str(device), "cpu_threads_available": previous_threads, "rows": rows, "loop": loop})
    show(reporter, rows, loop, config.convs)
    plot(run, rows, config.convs)
    return {"bench": summarise(rows), "loop_ratio": loop["ratio"]}


def time_ms(function, threads: int, min_run_time: float) -> float:
    timer = benchmark.Timer("function()", globals={"function": function}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def measure_point(config: BenchConfig, device, threads: int, batch_size: int, reporter: Reporter) -> list[dict]:
    """Layer fwd+bwd and training step per conv kind; native and hand-written alternate over
    `rounds`, and each keeps its fastest median, so a busy moment on a shared machine does
    not land on one side only."""
    workloads = {conv: workloads_for(conv, config.seed, batch_size, device) for conv in config.convs}
    best: dict[tuple[str, str], float] = {}
    for _ in range(config.rounds):
        for conv, items in workloads.items():
            for what, function in items.items():
                ms = time_ms(function, threads, config.min_run_time)
                best[(conv, what)] = min(ms, best.get((conv, what), float("inf")))
    rows = []
    for (conv, what), ms in best.items():
        row = {"threads": threads, "batch_size": batch_size, "what": what, "conv": conv, "ms": ms}
        if what == "training step":
            row["gflops"] = step_flops(batch_size) / (ms * 1e-3) / 1e9
            reporter.line(f"threads {threads}, batch {batch_size}, {conv}: training step {ms:.2f} ms")
        rows.append(row)
    return rows


def workloads_for(conv: str, seed: int, batch_size: int, device) -> dict:
    """What gets timed for one conv kind: each conv layer's forward+backward, then a full step."""
    torch.manual_seed(seed)
    model = to_device(MNISTConvNet(conv), device)
    items = {}
    for name, (c_in, _, size) in CONV_LAYERS.items():
        layer = getattr(model.features, name)
        x = torch.rand(batch_size, c_in, size, size, device=device)
        x = x.to(memory_format=torch.channels_last)  # the layout the network hands its layers
        if name != "conv1":
            x.requires_grad_()

        def layer_step(layer=layer, x=x):
            layer(x).sum().backward()

        items[f"{name} fwd+bwd"] = layer_step
    items["training step"] = training_step(model, batch_size, device)
    return items


def training_step(model, batch_size: int, device):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def step_flops(batch_size: int) -> float:
    """Multiply-adds x 2 of MNISTConvNet's convs and linear: forward once, backward twice
    (grad of weight and of input) except conv1, whose input needs no gradient."""
    forward = {name: 2 * c_in * 9 * c_out * size * size for name, (c_in, c_out, size) in CONV_LAYERS.items()}
    forward["fc1"] = 2 * 576 * 10
    total = sum(3 * f for f in forward.values()) - forward["conv1"]
    return batch_size * total


def measure_loop(config: BenchConfig, device) -> dict:
    """One epoch through convexp's train_epoch vs a bare loop doing the same steps."""
    g = torch.Generator().manual_seed(config.seed)
    images = torch.rand(config.loop_digits, 1, 28, 28, generator=g).to(device)
    labels = torch.randint(0, 10, (config.loop_digits,), generator=g).to(device)
    split = Split([images], [labels])
    bare_times, loop_times = [], []
    for _ in range(config.loop_repeats):  # alternate, so drift in the machine hits both alike
        torch.manual_seed(config.seed)
        model = to_device(MNISTConvNet("native"), device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        bare_times.append(timed(lambda: bare_epoch(model, optimizer, images, labels, config.loop_batch_size, config.seed), device))
        generators = make_generators(config.seed, device)
        loop_times.append(timed(lambda: train_epoch(model, optimizer, split, config.loop_batch_size, generators, None, lambda: None), device))
    bare, loop = sorted(bare_times)[len(bare_times) // 2], sorted(loop_times)[len(loop_times) // 2]
    return {"digits": config.loop_digits, "batch_size": config.loop_batch_size, "bare_s": bare, "convexp_s": loop, "ratio": loop / bare}


def bare_epoch(model, optimizer, images, labels, batch_size: int, seed: int) -> None:
    model.train()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(labels.device)
    for indices in order.split(batch_size):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images[indices]), labels[indices]).backward()
        optimizer.step()


def timed(function, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if isinstance(result, torch.Tensor):
        result.tolist()  # the training loop's one sync
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def add_ratios(rows: list[dict]) -> None:
    """ratio = hand-written / native for the same (threads, batch, what)."""
    native = {(r["threads"], r["batch_size"], r["what"]): r["ms"] for r in rows if r["conv"] == "native"}
    for row in rows:
        key = (row["threads"], row["batch_size"], row["what"])
        if key in native:
            row["ratio"] = row["ms"] / native[key]


def summarise(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ("threads", "batch_size", "conv", "ms", "ratio") if k in r}
            for r in rows if r["what"] == "training step"]


def show(reporter: Reporter, rows: list[dict], loop: dict, convs: list[str]) -> None:
    keys = list(dict.fromkeys((r["threads"], r["batch_size"], r["what"]) for r in rows))
    table = []
    for threads, batch, what in keys:
        cells = {r["conv"]: r for r in rows if (r["threads"], r["batch_size"], r["what"]) == (threads, batch, what)}
        line = [threads, batch, what]
        for conv in convs:
            line.append(f"{cells[conv]['ms']:.2f}" if conv in cells else "-")
        for conv in convs[1:]:
            line.append(f"{cells[conv]['ratio']:.2f}x" if "ratio" in cells.get(conv, {}) else "-")
        step = cells.get(convs[-1], {})
        line.append(f"{step['gflops']:.1f}" if "gflops" in step else "")
        table.append(line)
    print_table(reporter.console, "Median milliseconds; ratio = hand-written / native",
                ["threads", "batch", "what", *(f"{c} ms" for c in convs), *(f"{c} ratio" for c in convs[1:]),
                 f"{convs[-1]} GFLOP/s"], table)
    print_table(reporter.console, f"Training loop, one epoch of {loop['digits']} random digits, batch {loop['batch_size']}",
                ["bare loop s", "convexp loop s", "ratio"], [[f"{loop['bare_s']:.3f}", f"{loop['convexp_s']:.3f}", f"{loop['ratio']:.3f}x"]])


def plot(run: RunFolder, rows: list[dict], convs: list[str]) -> None:
    steps = [r for r in rows if r["what"] == "training step"]
    plots.grouped_bars(
        {conv: {f"{r['threads']}t b{r['batch_size']}": r["ms"] for r in steps if r["conv"] == conv} for conv in convs},
        "milliseconds (median)", "Training step of MNISTConvNet: native vs hand-written conv", run.plots / "training_step.png",
    )

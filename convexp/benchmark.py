"""What `convexp bench` measures: hand-written vs native convolution, and the training loop vs a
bare loop (experiments/bench.py is the experiment: its config and command).

Timings come from torch.utils.benchmark (medians of blocked runs, warm-up included, CUDA
synchronised). Random inputs: the bench needs no data set.
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch
import torch.nn.functional as F

from convexp import autograd, plots
from convexp.console import Reporter
from convexp.data import Split
from convexp.errors import ConvexpError
from convexp.memory import keep_freed_memory
from convexp.models import MNISTConvNet, to_device
from convexp.precision import autocast
from convexp.precision import resolve as resolve_precision
from convexp.runs import RunFolder
from convexp.train import make_generators, train_epoch

# Input of each conv layer of MNISTConvNet: (channels, size); every one 3x3, padding 1.
CONV_LAYERS = {"conv1": (1, 16, 28), "conv2": (16, 32, 14), "conv3": (32, 64, 7)}

def run(config, run: RunFolder, device: torch.device, reporter: Reporter) -> dict:
    """The bench of experiments/bench.py. `config` is its BenchConfig, left unnamed here: that
    module imports this one, and a type import back would make a cycle."""
    for key in ("cuda_graphs", "tf32"):
        if getattr(config, key) and device.type != "cuda":
            raise ConvexpError(f"{key}=true is for CUDA, but the bench runs on {device}: add --device cuda "
                               "or drop the setting")
    previous_threads = torch.get_num_threads()
    rows, peak = [], {}
    try:
        with float32_products(device, config.tf32):
            for threads in config.threads:
                torch.set_num_threads(threads)
                peak[threads] = peak_matmul_gflops(device, threads, config.min_run_time)
                for batch_size in config.batch_sizes:
                    rows += measure_point(config, device, threads, batch_size, reporter)
            torch.set_num_threads(previous_threads)
            loop = measure_loop(config, device)
    finally:
        torch.set_num_threads(previous_threads)
    add_floor_rows(rows)
    add_ratios(rows)
    run.write_json("bench.json", {
        "device": str(device), "device_name": device_name(device), "cpu_threads_available": previous_threads,
        "tf32": config.tf32 if device.type == "cuda" else None, "cuda_graphs": config.cuda_graphs,
        "peak_matmul_gflops": peak,
        "freed_memory_kept": keep_freed_memory(),  # the CLI's call, remembered (functools.cache)
        "rows": rows, "loop": loop})
    show(reporter, rows, loop, config.convs, device_name(device), peak,
         "TF32" if config.tf32 and device.type == "cuda" else "float32")
    plot(run, rows, config.convs)
    return {"bench": summarise(rows), "loop_ratio": loop["ratio"]}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


@contextlib.contextmanager
def float32_products(device: torch.device, tf32: bool):
    """On CUDA, cuDNN and cuBLAS both at plain float32 (or both at TF32): like for like."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=tf32):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def peak_matmul_gflops(device: torch.device, threads: int, min_run_time: float) -> float:
    """The rate of one large float32 matmul on this device and thread count: the ceiling the
    conv layers' GFLOP/s are read against (a GPU's is measured, not its datasheet's)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    ms = time_ms(lambda: a @ b, threads, min_run_time)
    return 2 * n**3 / (ms * 1e-3) / 1e9


def time_ms(function, threads: int, min_run_time: float) -> float:
    timer = timer_class()("function()", globals={"function": function}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def measure_point(config, device, threads: int, batch_size: int, reporter: Reporter) -> list[dict]:
    """Layer fwd+bwd and training step per precision and conv kind; all of them alternate over
    `rounds`, and each keeps its fastest median, so a busy moment on a shared machine does
    not land on one side only."""
    workloads = {(precision, conv): workloads_for(conv, config.seed, batch_size, device, config.cuda_graphs, precision)
                 for precision in config.precisions for conv in config.convs}
    best: dict[tuple[str, str, str], float] = {}
    for _ in range(config.rounds):
        for (precision, conv), items in workloads.items():
            for what, function in items.items():
                ms = time_ms(function, threads, config.min_run_time)
                best[(precision, conv, what)] = min(ms, best.get((precision, conv, what), float("inf")))
    rows = []
    for (precision, conv, what), ms in best.items():
        row = {"threads": threads, "batch_size": batch_size, "precision": precision, "what": what, "conv": conv,
               "ms": ms, "gflops": work_flops(what, batch_size) / (ms * 1e-3) / 1e9}
        if what == "training step":
            reporter.line(f"threads {threads}, batch {batch_size}, {precision}, {conv}: training step {ms:.2f} ms")
        rows.append(row)
    return rows


def workloads_for(conv: str, seed: int, batch_size: int, device, cuda_graphs: bool = False,
                  precision: str = "fp32") -> dict:
    """What gets timed for one conv kind: each conv layer's forward+backward, then a full step;
    at bf16, each forward (and the step's loss) under autocast, as training at bf16 runs.

    A hand-written kind at fp32 also times each layer's three float32 products alone (see
    matmuls_alone). With cuda_graphs, each is captured once and replayed (see graphed)."""
    torch.manual_seed(seed)
    dtype, _ = resolve_precision(precision, device)
    model = to_device(MNISTConvNet(conv), device)
    items = {}
    for name, (c_in, _, size) in CONV_LAYERS.items():
        layer = getattr(model.features, name)
        x = torch.rand(batch_size, c_in, size, size, device=device)
        x = x.to(memory_format=torch.channels_last)  # the layout the network hands its layers
        if name != "conv1":
            x.requires_grad_()

        def layer_step(layer=layer, x=x):
            with autocast(dtype, device):
                out = layer(x).sum()
            out.backward()

        items[f"{name} fwd+bwd"] = layer_step
        if conv != "native" and dtype is None:
            items[f"{name} {MATMULS_ALONE}"] = matmuls_alone(layer, x.detach(), needs_input_grad=name != "conv1")
    # The step trains a copy: its zero_grad(set_to_none=True) would free the layers' .grad tensors,
    # into which the layer items' captured CUDA graphs keep writing (an H200 ran into a
    # device-side assert and an illegal address that way).
    items["training step"] = training_step(copy.deepcopy(model), batch_size, device, capturable=cuda_graphs, dtype=dtype)
    return {what: graphed(function) for what, function in items.items()} if cuda_graphs else items


def graphed(function):
    """`function` captured once as a CUDA graph, and its replay: the same kernels with no Python
    or launch cost per call, so timing it measures the GPU's own time. Warmed up on a side
    stream first, as CUDA graph capture requires (PyTorch's CUDA graphs notes)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            function()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        function()
    return graph.replay


def timer_class():
    """torch.utils.benchmark.Timer, imported when first timing: the import pulls in
    torch.utils.cpp_extension, whose warning about a missing CUDA toolkit means nothing here."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    return Timer


MATMULS_ALONE = "matmuls alone"
STEP_FLOOR = "training step, matmul floor"


def matmuls_alone(layer, x: torch.Tensor, needs_input_grad: bool):
    """The products any unfold/matmul/fold conv must do, each as one matmul on ready operands:
    forward R W̃ᵀ + bias, grad of weight Rᵀ Y∇, and (but for the first layer) grad of the
    unfolded input Y∇ W̃, over the same chunks of images as the hand-written layer uses, with
    each chunk's operands already in cache. Unfold, fold and every copy are left out, so this
    is the least time the layer can take with this machine's matmul (MKL on CPU)."""
    c_out, c_in, kh, kw = layer.weight.shape
    geometry = layer.geometry(x)
    h_out, w_out = autograd.output_size(x, layer.weight, geometry)
    k = kh * kw * c_in
    chunk = autograd.images_per_chunk(x.shape[0], h_out * w_out * k * x.element_size(), x.device.type)
    rows = autograd.unfold_rows(x[:chunk], (kh, kw), geometry, (h_out, w_out))[0]  # one group
    weight = layer.weight.detach().permute(0, 2, 3, 1).reshape(c_out, k)
    bias = layer.bias.detach()
    grad_out = torch.rand(rows.shape[0], c_out, device=x.device)
    chunks = -(-x.shape[0] // chunk)

    def products():
        for _ in range(chunks):
            torch.addmm(bias, rows, weight.t())
            rows.t() @ grad_out
            if needs_input_grad:
                grad_out @ weight

    return products


def training_step(model, batch_size: int, device, capturable: bool = False, dtype: torch.dtype | None = None):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=capturable)  # capturable: inside a CUDA graph
    x = torch.rand(batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(dtype, device):  # float32 weights and optimizer state, as train.py keeps them
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def layer_flops(batch_size: int) -> dict[str, float]:
    """Multiply-adds x 2 of each conv layer's forward and backward: forward once, backward twice
    (grad of weight and of input) except conv1, whose input needs no gradient."""
    forward = {name: 2 * c_in * 9 * c_out * size * size for name, (c_in, c_out, size) in CONV_LAYERS.items()}
    forward["fc1"] = 2 * 576 * 10
    return {name: batch_size * (2 if name == "conv1" else 3) * f for name, f in forward.items()}


def step_flops(batch_size: int) -> float:
    """The whole network's layers, forward and backward (pooling and ReLU not counted)."""
    return sum(layer_flops(batch_size).values())


def work_flops(what: str, batch_size: int) -> float:
    """FLOPs of one timed item: a layer's fwd+bwd (or its matmuls alone) or a training step."""
    layer = what.split(" ", 1)[0]
    return layer_flops(batch_size)[layer] if layer in CONV_LAYERS else step_flops(batch_size)


def measure_loop(config, device) -> dict:
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


def add_floor_rows(rows: list[dict]) -> None:
    """Per hand-written kind, the training step it would take if each conv layer cost only its
    matmuls: the native step + Σ_layers (matmuls alone - native layer). An estimate, shown so
    the goal can be read against what the matmuls alone allow."""
    ms = {(r["threads"], r["batch_size"], r["precision"], r["conv"], r["what"]): r["ms"] for r in rows}
    steps = [(r["threads"], r["batch_size"], r["conv"]) for r in rows if r["what"] == "training step"
             and r["conv"] != "native" and r["precision"] == "fp32"
             and (r["threads"], r["batch_size"], "fp32", "native", "training step") in ms]
    for threads, batch, conv in steps:
        floor = ms[(threads, batch, "fp32", "native", "training step")] + sum(
            ms[(threads, batch, "fp32", conv, f"{name} {MATMULS_ALONE}")] - ms[(threads, batch, "fp32", "native", f"{name} fwd+bwd")]
            for name in CONV_LAYERS)
        rows.append({"threads": threads, "batch_size": batch, "precision": "fp32", "what": STEP_FLOOR, "conv": conv, "ms": floor})


def native_counterpart(what: str) -> str:
    """What a hand-written row is compared with: a layer's matmuls against the native layer."""
    if what.endswith(MATMULS_ALONE):
        return what.replace(MATMULS_ALONE, "fwd+bwd")
    return "training step" if what == STEP_FLOOR else what


def add_ratios(rows: list[dict]) -> None:
    """ratio = hand-written / native for the same (threads, batch, precision, what); at bf16,
    bf16_speedup = the fp32 row's ms / this row's for the same conv."""
    native = {(r["threads"], r["batch_size"], r["precision"], r["what"]): r["ms"] for r in rows if r["conv"] == "native"}
    fp32 = {(r["threads"], r["batch_size"], r["conv"], r["what"]): r["ms"] for r in rows if r["precision"] == "fp32"}
    for row in rows:
        key = (row["threads"], row["batch_size"], row["precision"], native_counterpart(row["what"]))
        if key in native:
            row["ratio"] = row["ms"] / native[key]
        same = (row["threads"], row["batch_size"], row["conv"], row["what"])
        if row["precision"] == "bf16" and same in fp32:
            row["bf16_speedup"] = fp32[same] / row["ms"]


def summarise(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ("threads", "batch_size", "precision", "conv", "what", "ms", "ratio", "bf16_speedup") if k in r}
            for r in rows if r["what"] in ("training step", STEP_FLOOR)]


def show(reporter: Reporter, rows: list[dict], loop: dict, convs: list[str], name: str, peak: dict,
         matmul_precision: str = "float32") -> None:
    keys = list(dict.fromkeys((r["threads"], r["batch_size"], r["precision"], r["what"]) for r in rows))
    order = list(dict.fromkeys(r["precision"] for r in rows))  # as the config lists them
    keys.sort(key=lambda key: (*key[:2], order.index(key[2])))  # stable: each point's rows in measured order, floor last
    bf16 = any(r["precision"] == "bf16" for r in rows)
    table = []
    for threads, batch, point_precision, what in keys:
        cells = {r["conv"]: r for r in rows if (r["threads"], r["batch_size"], r["precision"], r["what"])
                 == (threads, batch, point_precision, what)}
        line = [threads, batch, point_precision, what]
        for conv in convs:
            line.append(f"{cells[conv]['ms']:.2f}" if conv in cells else "-")
        for conv in convs[1:]:
            line.append(f"{cells[conv]['ratio']:.2f}x" if "ratio" in cells.get(conv, {}) else "-")
        for conv in convs:
            line.append(f"{cells[conv]['gflops']:.0f}" if "gflops" in cells.get(conv, {}) else "-")
        if bf16:
            line += [f"{cells[conv]['bf16_speedup']:.2f}x" if "bf16_speedup" in cells.get(conv, {}) else "-" for conv in convs]
        table.append(line)
    ceiling = ", ".join(f"{t} thread(s) {g:.0f}" for t, g in peak.items())
    speedup = "; bf16 speed-up = the fp32 row's ms / the bf16 row's" if bf16 else ""
    reporter.table(f"{name}: median milliseconds; ratio = hand-written / native (matmuls alone: against the native "
                   f"layer); GFLOP/s of the layer or step{speedup}; one large {matmul_precision} matmul runs at {ceiling} GFLOP/s",
                ["threads", "batch", "precision", "what", *(f"{c} ms" for c in convs), *(f"{c} ratio" for c in convs[1:]),
                 *(f"{c} GFLOP/s" for c in convs), *([f"{c} bf16 speed-up" for c in convs] if bf16 else [])], table)
    reporter.table(f"Training loop, one epoch of {loop['digits']} random digits, batch {loop['batch_size']}",
                ["bare loop s", "convexp loop s", "ratio"], [[f"{loop['bare_s']:.3f}", f"{loop['convexp_s']:.3f}", f"{loop['ratio']:.3f}x"]])


def plot(run: RunFolder, rows: list[dict], convs: list[str]) -> None:
    steps = [r for r in rows if r["what"] == "training step"]
    several = len({r["precision"] for r in steps}) > 1
    plots.grouped_bars(
        {f"{conv} {precision}" if several else conv:
         {f"{r['threads']}t b{r['batch_size']}": r["ms"] for r in steps if (r["conv"], r["precision"]) == (conv, precision)}
         for precision in dict.fromkeys(r["precision"] for r in steps) for conv in convs},
        "milliseconds (median)", "Training step of MNISTConvNet: native vs hand-written conv", run.plots / "training_step.png",
    )

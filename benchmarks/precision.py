"""fp32 against bf16 (train.precision) on this CPU, side by side: rounds alternate, the fastest
of each counts, so load that comes and goes hits both alike.

    .venv/bin/python benchmarks/precision.py [--rounds 3] [--threads 2]

Prints the CPU's bf16 units, then seconds per training epoch of MNISTConvNet at batch 16 on
mnist-mini's 6,400 training digits (as train-mnist), of the global-pooling net (N=81) on 1,200
random images per resolution 32/48/64 at batch 32 (as varres-pool), and of one evaluation of each
in fp32 and in bf16, with the accuracy each evaluation gives of a model trained in bf16.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import torch


def cpu_line() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                     .stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    from convexp.precision import cpu_bf16_flags

    return f"{model}; bf16 units: {', '.join(cpu_bf16_flags()) or 'none'}; {torch.get_num_threads()} threads"


def mnist_splits():
    from convexp.config import MnistData
    from convexp.data import load_mnist

    root = os.path.join(os.environ.get("CONVEXP_DATA", "../shared/data"), "mnist-mini")
    return load_mnist(MnistData(root=root, download=False, val_split=0.2))


def random_varres(per_resolution: int = 1200):
    from convexp.data import Split

    g = torch.Generator().manual_seed(0)
    sizes = (32, 48, 64)
    return Split([torch.rand(per_resolution, 1, s, s, generator=g) for s in sizes],
                 [torch.randint(0, 10, (per_resolution,), generator=g) for _ in sizes])


def one_epoch(make_model, split, batch_size: int, precision) -> float:
    from convexp.config import Train
    from convexp.models import to_device
    from convexp.train import make_generators, make_optimizer, train_epoch

    torch.manual_seed(0)
    model = to_device(make_model(), torch.device("cpu"))
    optimizer = make_optimizer(model, Train(), torch.device("cpu"))
    started = time.perf_counter()
    train_epoch(model, optimizer, split, batch_size, make_generators(0, torch.device("cpu")), None, lambda: None,
                precision=precision)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from convexp.models import MNISTConvNet, VariableInputNet
    from convexp.train import evaluate

    print(cpu_line())
    mnist, varres = mnist_splits(), random_varres()
    cases = {
        "train-mnist epoch (batch 16, 6,400 digits)": (lambda: MNISTConvNet("native"), mnist.train, 16),
        "train-mnist epoch, hand-written conv": (lambda: MNISTConvNet("unfold"), mnist.train, 16),
        "varres-pool epoch (N=81, batch 32, 3,600 images)": (lambda: VariableInputNet(81, "max"), varres, 32),
    }
    for name, (make_model, split, batch) in cases.items():
        best = {"fp32": float("inf"), "bf16": float("inf")}
        for _ in range(args.rounds):
            for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                best[label] = min(best[label], one_epoch(make_model, split, batch, dtype))
        print(f"{name}: fp32 {best['fp32']:.2f} s, bf16 {best['bf16']:.2f} s, {best['fp32'] / best['bf16']:.2f}x")
    # evaluation: the same bf16-trained model measured both ways
    from convexp.config import Train
    from convexp.models import to_device
    from convexp.train import make_generators, make_optimizer, train_epoch

    torch.manual_seed(0)
    model = to_device(MNISTConvNet("native"), torch.device("cpu"))
    train_epoch(model, make_optimizer(model, Train(), torch.device("cpu")), mnist.train, 16,
                make_generators(0, torch.device("cpu")), None, lambda: None, precision=torch.bfloat16)
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        seconds = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            result = evaluate(model, mnist.val, 1000, precision=dtype)
            seconds.append(time.perf_counter() - started)
        print(f"evaluation of 1,600 digits in {label}: {min(seconds):.3f} s, accuracy {result.accuracy:.4f}, "
              f"loss {result.loss:.5f}")


if __name__ == "__main__":
    main()

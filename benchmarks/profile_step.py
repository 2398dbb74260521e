"""Where a training step's time goes: torch.profiler over MNISTConvNet steps, per conv kind.

    python benchmarks/profile_step.py --batch 256 1024 --convs native unfold

Prints, per (conv, batch), the operators and kernels that take the most device time (CUDA) or
CPU time, over 20 steps after 10 warm-up steps, in plain float32 (TF32 off, as `convexp bench`).
"""

from __future__ import annotations

import argparse

import torch

from convexp.benchmark import float32_products, training_step
from convexp.models import MNISTConvNet, to_device


def profile(conv: str, batch: int, device: torch.device, steps: int = 20) -> str:
    torch.manual_seed(0)
    step = training_step(to_device(MNISTConvNet(conv), device), batch, device)
    for _ in range(10):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        torch.cuda.synchronize()
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    averages = prof.key_averages()
    sort_keys = ["self_device_time_total", "self_cuda_time_total"] if device.type == "cuda" else ["self_cpu_time_total"]
    for key in sort_keys:  # the name changed across PyTorch versions
        try:
            return averages.table(sort_by=key, row_limit=18, max_name_column_width=55)
        except (AttributeError, KeyError):
            continue
    return averages.table(row_limit=18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--convs", nargs="+", default=["native", "unfold"])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with float32_products(device, tf32=False):
        for batch in args.batch:
            for conv in args.convs:
                print(f"\n== {conv} conv, batch {batch}, 20 training steps on {device} ==")
                print(profile(conv, batch, device))


if __name__ == "__main__":
    main()

"""Mixed precision (train.precision): bfloat16 arithmetic for the forward pass and the loss,
float32 master weights and optimizer state. `auto` takes bf16 where the device computes it in
hardware (CPU flags avx512_bf16 or amx_bf16; CUDA capability 8.0 or later) and fp32 elsewhere:
emulated bf16 is slower than fp32, never faster.

Denormals (train.flush_denormals): on a CPU, float32 values below 1.2e-38 take a slow path in
hardware, up to 100x per operation. Adam with an L2 weight decay drives the second moments of
weights that no longer get a data gradient (dead ReLU units) into that range within an epoch, and
the epochs then slow down one after another (benchmarks/denormals.sh). Flushing them to zero, as
GPUs and most training stacks on CPUs do, changes nothing a float32 result can show."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 units this CPU announces (Linux's /proc/cpuinfo; none where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(flag for flag in CPU_BF16_FLAGS if flag in flags)


def resolve(setting: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """(the autocast dtype, None for plain float32; why), for train.precision = fp32 | bf16 | auto."""
    if setting == "fp32":
        return None, "fp32: asked for"
    if setting == "bf16":
        return torch.bfloat16, "bf16: asked for"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return torch.bfloat16, f"auto: CUDA capability {major}.{minor} computes bf16"
        return None, f"auto: CUDA capability {major}.{minor} has no bf16 units"
    flags = cpu_bf16_flags()
    if flags:
        return torch.bfloat16, f"auto: the CPU has {' and '.join(flags)}"
    return None, "auto: the CPU has no bf16 units (avx512_bf16, amx_bf16)"


@contextlib.contextmanager
def denormals_flushed(flush: bool, device: torch.device) -> Iterator[None]:
    """CPU arithmetic treats denormal inputs and results as zero (flush) for the duration, then is
    back to IEEE's gradual underflow, PyTorch's default (it has no getter to restore anything
    else). A no-op on CUDA, where torch.set_flush_denormal does not reach."""
    if not flush or device.type != "cpu":
        yield
        return
    torch.set_flush_denormal(True)  # returns False, changing nothing, on CPUs without SSE3 (not x86)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass and the loss under autocast to `dtype`; nothing changes for None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast asks of x's device now, or None when autocast is off there."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None

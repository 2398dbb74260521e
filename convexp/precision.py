"""Mixed precision (train.precision): bfloat16 arithmetic for the forward pass and the loss,
float32 master weights and optimizer state. `auto` takes bf16 where the device computes it in
hardware (CPU flags avx512_bf16 or amx_bf16; CUDA capability 8.0 or later) and fp32 elsewhere:
emulated bf16 is slower than fp32, never faster.

Denormals: on x86, float32 values below 1.2e-38 take a slow path in hardware on every operation.
Training with Adam and an L2 weight decay produces such values (likely in the optimizer state of
weights that no longer get a data gradient; not traced further), and the epochs then slow down
one after another (README, Speed and memory; benchmarks/denormals.sh). convexp flushes them to zero
in every process that trains. A value that small is lost in any sum with a normal one, so
flushing changes results as a different order of additions does: in the last bits, which
training then carries on (benchmarks/denormals.sh: 0.9888 validation accuracy against 0.9889).
CONVEXP_FLUSH_DENORMALS=0 keeps IEEE's gradual underflow, PyTorch's default. CUDA kernels are
not affected either way."""

from __future__ import annotations

import contextlib
import os
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


@cache  # once per process, before its first parallel op: see the module's docstring
def flush_denormals() -> bool:
    """From now on this process's CPU arithmetic treats denormals as zero; True when it does.
    x86 keeps the flag per thread (MXCSR) and a new thread inherits its creator's, so this must
    run before any tensor operation starts PyTorch's OpenMP threads: a thread started earlier
    keeps IEEE arithmetic (measured: half of a 2-thread product then stays denormal). Called
    where a process starts its work: the CLI's commands, a study's worker, a Ray task.
    False, doing nothing, under CONVEXP_FLUSH_DENORMALS=0 (or false, no, off), or off x86 (no SSE3)."""
    if os.environ.get("CONVEXP_FLUSH_DENORMALS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return torch.set_flush_denormal(True)


def denormal_arithmetic() -> str:
    """What this process's CPU threads do with denormals now, as summary.json records it: a
    product spread over every thread of torch's pool, of the smallest denormal float32 (built from
    its bits: converting 1e-39 would already be flushed, in this thread only)."""
    tiny = torch.ones(DENORMAL_PROBE, dtype=torch.int32).view(torch.float32)
    zeros = int((tiny * 1.0).eq(0).sum())
    if zeros == DENORMAL_PROBE:
        return "flushed to zero"
    return "IEEE (gradual underflow)" if zeros == 0 else "mixed: flushed in some threads only"


DENORMAL_PROBE = 1 << 20  # elements: enough for torch to split the product over its threads


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass and the loss under autocast to `dtype`; nothing changes for None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast asks of x's device now, or None when autocast is off there."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None

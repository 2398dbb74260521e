"""Every experiment convexp runs: one module each, with its `Config`, its `run` and its `SPEC`
(convexp/spec.py). A new experiment is its module, its configs/<name>.yaml, and its name here.

The modules are light to import (torch and the training code load inside their functions), so
the command line reads every spec without importing torch."""

from __future__ import annotations

import importlib

from convexp.errors import ConvexpError

# In this order on `convexp --help`.
NAMES = ("train-mnist", "sweep-batch", "augment", "varres-resize", "varres-pool", "bench", "count-params",
         "gradcheck", "reproduce", "sweep")


def spec(name: str):
    """The Experiment that `name` (a command, as summary.json records it) declares."""
    if name not in NAMES:
        raise ConvexpError(f"{name!r} is not an experiment of convexp: one of {', '.join(NAMES)}")
    return importlib.import_module(f"convexp.experiments.{name.replace('-', '_')}").SPEC


def specs() -> list:
    return [spec(name) for name in NAMES]

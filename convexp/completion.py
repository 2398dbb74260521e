"""What the shell completes (Typer's completion: `convexp --install-completion`): config files
for --config, run folders for resume and report, experiments for sweep, config keys for --set
and --grid. Each reads only files and specs, no torch, so a TAB answers at once."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import typer


def config_files(incomplete: str) -> list[str]:
    """configs/*.yaml (or YAML files where `incomplete` points)."""
    folder = Path(incomplete).parent if "/" in incomplete else Path("configs")
    return sorted(str(p) for p in folder.glob("*.yaml") if str(p).startswith(incomplete))


def run_folders(incomplete: str) -> list[str]:
    """Run folders (those with a summary.json) under runs/, or under the folder typed so far."""
    folder = Path(incomplete).parent if "/" in incomplete else Path("runs")
    return sorted(str(p.parent) for p in folder.glob("*/summary.json") if str(p.parent).startswith(incomplete))


def sweepable(incomplete: str) -> list[str]:
    from convexp.experiments import specs

    return [s.name for s in specs() if s.sweepable and s.name.startswith(incomplete)]


def keys_of(config_class: type, prefix: str = "") -> list[str]:
    """Every settable key of a config class, sections walked: ["seed", "train.lr", ...]."""
    keys = []
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += keys_of(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def config_keys(ctx: typer.Context, incomplete: str) -> list[str]:
    """`KEY=` for --set and --grid: the keys of the command's experiment, or, for a command that
    takes an EXPERIMENT argument (sweep), of the one typed (while completing, it is still among
    the context's unparsed args)."""
    from convexp.experiments import NAMES, spec

    name = ctx.info_name
    if "experiment" in ctx.params:
        name = ctx.params["experiment"] or (ctx.args[0] if ctx.args else "")
    if name not in NAMES:
        return []
    return [f"{key}=" for key in keys_of(spec(name).config) if key.startswith(incomplete)]

"""convexp's modules import one another in one direction (STYLE.md, Layers): no cycle, imports
inside functions included, and no lower layer reaching up into a higher one. Read from the source
with `ast`, so a lazy import counts as much as one at the top, and so does one under
`if TYPE_CHECKING:`: a type hint that names an upper module ties the two as much as a call does."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "convexp"

# Lowest first: a module may import from its own layer and the layers below it, never above.
LAYERS = [
    {"convexp.errors", "convexp.interrupts", "convexp.memory", "convexp.fork_server", "convexp.stats", "convexp.callbacks", "convexp.record", "convexp.precision",
     "convexp.data_roots", "convexp.spec", "convexp.config", "convexp.autograd", "convexp.models", "convexp.shapes",
     "convexp.image_cache", "convexp.runs", "convexp.console", "convexp.progress", "convexp.plots", "convexp.data",
     "convexp.varres", "convexp.augment", "convexp.study_view"},
    {"convexp.train", "convexp.lifecycle", "convexp.benchmark", "convexp.execution", "convexp.execution.task",
     "convexp.execution.loop", "convexp.execution.workers", "convexp.execution.ray_tasks", "convexp.derivations", "convexp.loggers",
     "convexp.search"},
    "experiments",  # convexp.experiments and every module in it
    {"convexp.sweep_options", "convexp.application", "convexp.verdicts", "convexp.report", "convexp.listing",
     "convexp.predict", "convexp.export"},
    {"convexp.cli", "convexp.__main__", "convexp.completion"},
]


def module_name(path: Path) -> str:
    parts = ["convexp", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(source: str, importer: str, known: set[str]) -> set[str]:
    """The convexp modules `source` imports anywhere: at the top, in functions, under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from convexp import plots` imports the module convexp.plots
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    edges = set()
    for name in found:
        if name not in known:
            continue
        edges.add(name)
        package = name.rsplit(".", 1)[0]  # importing a submodule runs its package's __init__ first,
        if package in known and package != "convexp" and not importer.startswith(package + "."):  # unless inside it
            edges.add(package)
    edges.discard(importer)
    return edges


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path.read_text(), name, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # name -> "open" while on the path, "done" after
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def layer_of(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if layer == "experiments" and (name == "convexp.experiments" or name.startswith("convexp.experiments.")):
            return index
        if name in layer:
            return index
    raise AssertionError(f"{name} is in no layer of tests/test_layers.py: add it where it belongs")


def test_no_import_cycle_among_convexps_modules_lazy_imports_included():
    assert find_cycle(import_graph()) is None


def test_every_import_points_to_the_same_layer_or_below():
    upward = [f"{importer} -> {target}" for importer, targets in import_graph().items() for target in targets
              if layer_of(target) > layer_of(importer)]
    assert not upward, upward


def test_the_check_sees_a_cycle_made_of_lazy_imports():
    known = {"convexp.a", "convexp.b"}
    graph = {"convexp.a": imported("def f():\n    from convexp import b\n", "convexp.a", known),
             "convexp.b": imported("import convexp.a\n", "convexp.b", known)}
    assert find_cycle(graph) == ["convexp.a", "convexp.b", "convexp.a"]
    hinted = imported("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import convexp.b\n", "convexp.a", known)
    assert hinted == {"convexp.b"}  # a type hint's import counts too

"""The import graph of `src/seal` runs one way: no cycles, and every import runs down the layers
(foundation, training, engine, domains, applications, tooling, commands), so the engine and
training import no domain or application (what the engine needs from a domain comes through the
`Task` protocol or the inner loop a task hands over).

Read from the source, not by importing it: every `import` and `from ... import` in a module counts,
at module level, inside a function, or under `if TYPE_CHECKING:` (a lazy import that closes a
cycle is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# The layers, lowest first: a module may import its own layer and the layers below it, never one
# above. Each entry is a module or, ending in ".", a package and everything in it. Domains sit
# side by side and do not import each other; nor do the applications.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("seal", "seal.config", "seal.runs", "seal.rows", "seal.stats")),
    ("training", ("seal.training.",)),
    ("engine", ("seal.engine.",)),
    ("domains", ("seal.knowledge.", "seal.arc.")),
    ("applications", ("seal.documents.", "seal.demo")),
    ("tooling", ("seal.bench.", "seal.report.")),
    ("commands", ("seal.cli",)),
]
SIDE_BY_SIDE = {"domains", "applications"}

# Import edges a cycle may still run through (none).
ALLOWED: set[tuple[str, str]] = set()


def _in(module: str, entry: str) -> bool:
    return module.startswith(entry) or module == entry.rstrip(".") if entry.endswith(".") else module == entry


def layer_of(module: str) -> tuple[int, str]:
    """(rank, the entry that holds it) of a module; an unplaced module is an error to fix here."""
    for rank, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if _in(module, entry):
                return rank, entry
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "seal").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The `seal` modules this module imports, anywhere in its body."""
    package = name if _is_package(path) else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from seal import lora` imports the module seal.training.lora; `from .x import name`, seal.x
            targets.update(f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                           for alias in node.names)
    found = set()
    for target in targets:
        # `import seal.knowledge` names the deepest module that exists
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name and target != "seal":
            found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Depth-first search, colouring nodes on the path."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read_from_every_kind_of_import():
    graph = import_graph()
    for _, entries in LAYERS:  # the layer lists name modules and packages that exist
        assert all(any(_in(m, e) for m in graph) for e in entries), entries
    assert "seal.training.inner_loop" in graph["seal.engine.restem"]  # `from .inner_loop import ...`
    assert "seal.training.lora" in graph["seal.training.inner_loop"]  # `from . import lora`
    assert "seal.arc.grids" in graph["seal.arc"]  # a package's __init__


def test_no_import_cycles():
    graph = {a: {b for b in bs if (a, b) not in ALLOWED} for a, bs in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def test_each_allowed_edge_still_closes_a_cycle():
    graph = import_graph()
    for a, b in ALLOWED:
        assert b in graph[a] and _reaches(graph, b, a), f"{a} -> {b} closes no cycle now: take it off ALLOWED"


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def wrong_edges(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for low, ups in graph.items():
        rank, entry = layer_of(low)
        for up in ups:
            up_rank, up_entry = layer_of(up)
            if up_rank > rank or (up_rank == rank and up_entry != entry and LAYERS[rank][0] in SIDE_BY_SIDE):
                wrong.append(f"{low} ({LAYERS[rank][0]}) imports {up} ({LAYERS[up_rank][0]})")
    return sorted(wrong)


def test_every_import_runs_down_the_layers():
    """In particular the engine and training import no domain or application: what the engine
    needs from a domain comes through the `Task` protocol or the inner loop a task hands over."""
    wrong = wrong_edges(import_graph())
    assert not wrong, "\n".join(wrong)


def test_an_upward_or_sideways_import_is_caught():
    assert wrong_edges({"seal.engine.restem": {"seal.knowledge.task"}}) == [
        "seal.engine.restem (engine) imports seal.knowledge.task (domains)"]
    assert wrong_edges({"seal.arc.run": {"seal.knowledge"}}) == ["seal.arc.run (domains) imports seal.knowledge (domains)"]
    assert wrong_edges({"seal.knowledge.task": {"seal.engine.restem", "seal.knowledge", "seal.training.lora"}}) == []

"""The import graph of `src/seal` runs one way: no cycles, and the engine and training modules
import no domain or application module (what the engine needs from a domain comes through the
`Task` protocol or the inner loop a task hands over).

Read from the source, not by importing it: every `import` and `from ... import` in a module counts,
at module level, inside a function, or under `if TYPE_CHECKING:` (a lazy import that closes a
cycle is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

ENGINE = {"seal.task", "seal.engine", "seal.restem", "seal.evaluation", "seal.racing", "seal.executors",
          "seal.sft_distributed"}
TRAINING = {"seal.models", "seal.lora", "seal.inner_loop", "seal.attention", "seal.generation",
            "seal.generation_vllm", "seal.peft_folder"}
# Domain and application modules; a name ending in "." covers a package and everything in it.
ABOVE = ("seal.tasks.", "seal.evaluate", "seal.probes", "seal.continual", "seal.adapt", "seal.registry",
         "seal.oversight", "seal.documents", "seal.bench", "seal.bench_round", "seal.report", "seal.report.",
         "seal.demo", "seal.cli")

# Import edges a cycle may still run through (none: the knowledge table's pieces live in
# tasks/knowledge_table.py, below both `seal evaluate` and KnowledgeTask).
ALLOWED: set[tuple[str, str]] = set()


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
            # `from seal import lora` imports the module seal.lora; `from .x import name`, seal.x
            targets.update(f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                           for alias in node.names)
    found = set()
    for target in targets:
        # `import seal.tasks.knowledge` names the deepest module that exists
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


def _above(module: str) -> bool:
    return any(module.startswith(p) if p.endswith(".") else module == p for p in ABOVE)


def test_the_graph_is_read_from_every_kind_of_import():
    graph = import_graph()
    assert ENGINE | TRAINING <= graph.keys()  # the layer lists name modules that exist
    assert "seal.inner_loop" in graph["seal.restem"]  # `from .inner_loop import ...`
    assert "seal.lora" in graph["seal.inner_loop"]  # `from . import lora`
    assert "seal.tasks.arc.grids" in graph["seal.tasks.arc"]  # a package's __init__


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


def test_engine_and_training_import_no_domain_or_application():
    graph = import_graph()
    wrong = sorted(f"{low} imports {up}" for low in ENGINE | TRAINING for up in graph.get(low, ()) if _above(up))
    assert not wrong, "\n".join(wrong)

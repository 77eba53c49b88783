"""The kit's modules import each other without a cycle: module-level imports only (an import under
`if TYPE_CHECKING:` or inside a function runs later, or never, and cannot deadlock a load)."""

from __future__ import annotations

import ast
from pathlib import Path

import sparkstack

KIT = Path(sparkstack.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(KIT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[str]:
    names, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and not _is_type_checking(node):
            pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in KIT.rglob("*.py")}
    return {name: {imported for imported in _module_level_imports(ast.parse(path.read_text()))
                   if imported in modules and imported != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        stack.append(name)
        for imported in sorted(graph.get(name, ())):
            if state.get(imported) == "open":
                return stack[stack.index(imported):] + [imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        stack.pop()
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_the_kit_has_no_import_cycle():
    graph = import_graph()
    assert {"sparkstack.profiles", "sparkstack.groups", "sparkstack.cluster"} <= graph.keys()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["sparkstack.schema"] = graph["sparkstack.schema"] | {"sparkstack.profiles"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and "sparkstack.schema" in cycle

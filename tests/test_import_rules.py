"""The layering rules of docs/architecture.md, checked on the source with ``ast`` (nothing is imported).

- ``shared_models`` (the library) imports none of ``client``, ``server``, ``simulations``;
- ``client`` and ``server`` import neither each other nor ``simulations``;
- no import circle between files, counting imports inside functions too: a function-local import of
  project code is then only ever laziness, never a way around a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("shared_models", "client", "server", "simulations")
FORBIDDEN = {
    "shared_models": {"client", "server", "simulations"},
    "client": {"server", "simulations"},
    "server": {"client", "simulations"},
    "simulations": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The project module a dotted import name lands in (the longest existing prefix)."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in modules:
            return name
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[tuple[str, int]]:
    """(imported project module, line) for every import statement anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports pkg.sub when sub is a module, else an attribute of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        if isinstance(node, ast.ImportFrom) and getattr(node, "_type_checking", False):
            continue
        for t in targets:
            hit = resolve(t, modules)
            if hit is not None and hit != name:
                found.add((hit, node.lineno))
    return found


def type_checking_lines(path: Path) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (annotations only: never executed)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[tuple[str, int]]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        skip = type_checking_lines(path)
        graph[name] = {(m, line) for m, line in imports_of(name, path, modules) if line not in skip}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for start in sorted(graph):
        if start not in colour and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_layers_import_only_downward():
    bad = [f"{src} (line {line}) imports {dst}" for src, edges in import_graph().items() for dst, line in edges
           if dst.split(".")[0] in FORBIDDEN[src.split(".")[0]]]
    assert not bad, "\n".join(bad)


def test_no_import_circles_even_through_function_local_imports():
    graph = {src: {dst for dst, _ in edges} for src, edges in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("graph, has_cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"a.x"}, "a.x": {"a"}}, True),
])
def test_cycle_finder_known_graphs(graph, has_cycle):
    assert (find_cycle(graph) is not None) is has_cycle


def test_checker_sees_function_local_and_relative_imports(tmp_path):
    modules = {"pkg": tmp_path / "pkg" / "__init__.py", "pkg.a": tmp_path / "pkg" / "a.py",
               "pkg.b": tmp_path / "pkg" / "b.py"}
    (tmp_path / "pkg").mkdir()
    modules["pkg"].write_text("")
    modules["pkg.b"].write_text("")
    modules["pkg.a"].write_text("from . import b\n\ndef f():\n    from pkg.b import x\n")
    found = {m for m, _ in imports_of("pkg.a", modules["pkg.a"], modules)}
    assert found == {"pkg.b"}

"""The package's import graph, read from the source with ``ast``: no cycles, also through imports inside functions
(a function-level import that only hides a cycle is still a cycle); the cone engine imports no setting; nothing
branches on a tail class with ``isinstance``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "attreval"


def module_files() -> dict[str, Path]:
    """``attreval.x.y`` → its file, for every module of the package."""
    files = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """Every package module ``name`` imports anywhere in its file (top level, functions, ``TYPE_CHECKING`` blocks
    excepted: they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for child in node.body for inner in ast.walk(child))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = "import attreval.b\n\ndef f():\n    from attreval import a\n"
    assert imports_of("attreval.b", _write(tmp_path, source), {"attreval.a", "attreval.b"}) == {"attreval.a"}


def _write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "b.py"
    path.write_text(source, encoding="utf-8")
    return path


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50 and graph["attreval.tail"]  # the graph was read
    assert cycles(graph) == []


def test_the_cone_engine_imports_no_setting():
    graph = import_graph()
    cone = [name for name in graph if name == "attreval.cone" or name.startswith("attreval.cone.")]
    reached, todo = set(), list(cone)
    while todo:
        for imported in graph[todo.pop()]:
            if imported not in reached:
                reached.add(imported)
                todo.append(imported)
    assert "attreval.settings" not in reached and "attreval.tail" not in reached


def test_nothing_branches_on_a_tail_class():
    offenders = []
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance" and len(node.args) == 2:
                kinds = ast.unparse(node.args[1])
                if any(word.endswith("Tail") and word != "Tail" for word in kinds.replace(",", " ").replace("(", " ").split()):
                    offenders.append(f"{name}: isinstance(…, {kinds})")
    assert offenders == []

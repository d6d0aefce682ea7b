"""The package's modules import one way: no circles, and the layers stay apart.

Read from the source (every ``import`` statement, at the top or inside a
function, except those under ``if TYPE_CHECKING:``), so a lazy import that
closes a circle counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qwen_magics"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in edges:
        if v not in index:
            connect(v)
    return out


def test_the_walk_sees_the_package_and_would_see_a_circle():
    edges = graph()
    assert "qwen_magics.runner" in edges["qwen_magics.magics.qwen"]
    assert "qwen_magics.backends.common" in edges["qwen_magics.backends.openai_chat"]
    assert circles({**edges, "qwen_magics.events": {"qwen_magics.result"}}) != []  # result imports events


def test_no_module_imports_a_module_that_imports_it_back():
    assert circles(graph()) == []


def test_values_import_no_renderer_and_backends_import_no_driver_or_renderer():
    edges = graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    for value in ("qwen_magics.result", "qwen_magics.request", "qwen_magics.events", "qwen_magics.display.text"):
        assert not {m for m in reaches(value) if m.startswith(("qwen_magics.render", "qwen_magics.widgets"))}, value
    assert edges["qwen_magics.display.text"] == set()  # plain text about a run: imports nothing of the package
    for backend in (m for m in edges if m.startswith("qwen_magics.backends")):
        bad = {m for m in reaches(backend)
               if m == "qwen_magics.runner" or m.startswith(("qwen_magics.magics", "qwen_magics.render",
                                                                                     "qwen_magics.widgets"))}
        assert not bad, (backend, bad)

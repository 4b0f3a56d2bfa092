"""No import circle among the project's modules, read from the source (imports inside functions
count: a circle hidden in a function is still a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kd", "webapp", "viz")
FRONT_ENDS = ("app.py", "kd_plot.py")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Each project module -> the project modules it imports (anywhere in its source)."""
    files = [p for pkg in PACKAGES if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")]
    files += [root / name for name in FRONT_ENDS if (root / name).is_file()]
    modules = {_module_name(p, root): p for p in files}

    def known(name: str) -> str | None:  # kd.models.encoder.Encoder -> kd.models.encoder
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {known(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package[: len(package) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                # `from kd.models import delta` imports the module kd.models.delta
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else known(base))
        graph[name] = {t for t in targets if t and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "kd"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from kd.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from kd import c\n")
    (pkg / "c.py").write_text("from . import a\nimport os\n")
    (pkg / "d.py").write_text("import kd.a\n")
    graph = import_graph(tmp_path)
    assert graph["kd.c"] == {"kd.a"} and graph["kd.d"] == {"kd.a"}
    assert circles(graph) == [["kd.a", "kd.b", "kd.c"]]


def test_no_import_circle_in_the_project() -> None:
    graph = import_graph()
    assert {"kd.train.run", "kd.models.encoder", "webapp.budget", "app"} <= set(graph)
    assert circles(graph) == []

"""The house rules that keep corral's seams open: no import circle anywhere under
``src/corral`` (counting imports inside functions and under TYPE_CHECKING: a circle hidden
by a late import is still a circle), and no module over 800 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "corral"
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The corral modules ``path`` imports, anywhere in it. ``from corral.x import y`` names
    ``corral.x.y`` when that is a module, else ``corral.x``. The package's own ``__init__``
    re-exports lazily and is not followed."""
    found: set[str] = set()
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
    return {m for m in found if m in modules and m not in ("corral", here)}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle as a path of modules, found by the cycle finder that reports a
    pipeline's cycles (corral._graph: strongly connected components, then one cycle in each)."""
    from corral._graph import _cycles

    names = sorted(graph)
    number = {name: k for k, name in enumerate(names)}
    deps = [tuple(number[m] for m in sorted(graph[name])) for name in names]
    return [[names[k] for k in cycle] for cycle in _cycles(deps, set(range(len(names))))]


def test_no_import_circle_under_src_corral() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    assert "corral._scheduler" in graph["corral._runner"]  # the reader reads imports at all
    assert _circles(graph) == []


def test_finds_a_circle_when_there_is_one() -> None:
    (circle,) = _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert sorted(circle) == ["a", "b", "c"]


def test_no_module_over_800_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}

"""Graph export: a validated graph as Mermaid or Graphviz DOT text, for ``corral graph``.

Edges point from a dependency to its dependent (the direction work flows). Task ids are free
text — dots, dashes, spaces, quotes — so each format gets its own escaping:

- Mermaid node ids are ``n0, n1, ...`` (the task's index): a task id such as ``end`` or
  ``a-b`` would otherwise be read as a keyword or an arrow. The id is shown as a quoted label,
  with the characters Mermaid treats specially written as ``#<code>;`` entities.
- DOT uses the task id itself, as a double-quoted string with ``\\`` and ``"`` escaped, so that
  the source stays readable and any DOT tool can find a task by name.

Both are pure functions of the graph, and list nodes and edges in definition order, so that the
output is stable from run to run (diff-friendly).
"""

from __future__ import annotations

from typing import Literal

from corral._graph import Graph

__all__ = ["FORMATS", "export", "to_dot", "to_mermaid"]

Format = Literal["mermaid", "dot"]
FORMATS: tuple[Format, ...] = ("mermaid", "dot")

# Characters that end or change the meaning of a quoted Mermaid label; written as entities.
_MERMAID_SPECIAL = frozenset('"#&<>`\\|')


def export(graph: Graph, fmt: Format) -> str:
    """``graph`` as text in format ``fmt`` (one of :data:`FORMATS`), ending in a newline."""
    if fmt == "mermaid":
        return to_mermaid(graph)
    if fmt == "dot":
        return to_dot(graph)
    raise ValueError(f"unknown graph format {fmt!r}; choose one of {', '.join(FORMATS)}")


def mermaid_label(text: str) -> str:
    """``text`` as the inside of a double-quoted Mermaid label."""
    out = []
    for ch in text:
        if ch in _MERMAID_SPECIAL or ord(ch) < 32:
            out.append(f"#{ord(ch)};")
        else:
            out.append(ch)
    return "".join(out)


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart, left to right."""
    lines = [f"%% corral pipeline: {mermaid_label(graph.name)}", "flowchart LR"]
    for i, task_id in enumerate(graph.ids):
        lines.append(f'    n{i}["{mermaid_label(task_id)}"]')
    for i, deps in enumerate(graph.deps):
        for j in deps:
            lines.append(f"    n{j} --> n{i}")
    return "\n".join(lines) + "\n"


def dot_quote(text: str) -> str:
    """``text`` as a DOT double-quoted string (newlines become DOT's ``\\n`` line break)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph, left to right."""
    lines = [
        f"digraph {dot_quote(graph.name)} {{",
        "    rankdir=LR;",
        "    node [shape=box];",
    ]
    for task_id in graph.ids:
        lines.append(f"    {dot_quote(task_id)};")
    ids = graph.ids
    for i, deps in enumerate(graph.deps):
        for j in deps:
            lines.append(f"    {dot_quote(ids[j])} -> {dot_quote(ids[i])};")
    lines.append("}")
    return "\n".join(lines) + "\n"

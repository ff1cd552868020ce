"""Reading a pipeline file into plain data that remembers where everything was written.

:class:`_LineLoader` is PyYAML's safe loader building :class:`_Mapping` and :class:`_Sequence`
(a dict and a list that carry the 1-based line of each key and item) and recording every key
written twice in one mapping (PyYAML silently keeps the last). JSON goes through the same
loader, for its line numbers; :func:`_load` falls back to :mod:`json` only when YAML cannot read
it. Every failure here is a :class:`~corral._errors.PipelineError` naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from corral._errors import PipelineError, Problem


class _Mapping(dict[Any, Any]):
    """A mapping read from a file, with its own line and the line of each key (1-based)."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}


class _Sequence(list[Any]):
    """A sequence read from a file, with its own line and the line of each item."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []


class _Duplicate(NamedTuple):
    """A key written again in the same mapping; the mapping keeps the last value."""

    mapping: _Mapping
    key: Any
    line: int | None  # of the repeat
    first: int | None  # of the first time the key was written
    shadowed: Any  # the value the repeat replaced...
    shadowed_line: int | None  # ...and the line of its key

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building :class:`_Mapping` and :class:`_Sequence`, noting repeated keys.

    PyYAML silently keeps the last of two equal keys; here each repeat is also recorded, so
    that a task id or option written twice is reported instead of half-ignored. Keys brought
    in by a ``<<`` merge may be overridden: that is what merges are for.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[_Duplicate] = []


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Iterator[_Mapping]:
    data = _Mapping(node.start_mark.line + 1)
    yield data  # filled afterwards, so that recursive structures work as in SafeLoader
    own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
    loader.flatten_mapping(node)  # merged pairs come first, then the mapping's own
    merged = len(node.value) - own
    written: dict[Any, int] = {}  # the mapping's own keys, at their first line
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=False)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "found an unhashable key", key_node.start_mark,
            )
        line = key_node.start_mark.line + 1
        if i >= merged:
            if key in written:
                loader.duplicates.append(
                    _Duplicate(data, key, line, written[key], data[key], data.lines[key])
                )
            else:
                written[key] = line
        data[key] = loader.construct_object(value_node, deep=False)
        data.lines[key] = line


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> Iterator[_Sequence]:
    data = _Sequence(node.start_mark.line + 1)
    yield data
    data.lines = [item.start_mark.line + 1 for item in node.value]
    data.extend(loader.construct_object(item, deep=False) for item in node.value)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _read(file: Path) -> str:
    def fail(message: str, hint: str | None = None) -> PipelineError:
        return PipelineError([Problem(message, file=str(file), hint=hint)])

    if file.is_dir():
        raise fail("is a directory, not a pipeline file", hint="name a .yaml or .json file in it")
    try:
        return file.read_text(encoding="utf-8-sig")  # -sig: a byte order mark is dropped
    except FileNotFoundError:
        raise fail("no such file") from None
    except UnicodeDecodeError as e:
        raise fail(f"is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise fail(f"cannot be read: {e.strerror or e}") from None


def _load(text: str, file: str, fmt: str) -> tuple[Any, list[_Duplicate]]:
    """Parse ``text``; YAML errors, and JSON errors when YAML cannot read it, are problems.

    JSON goes through the YAML loader too, for its line numbers. Valid JSON has tabs only
    between tokens, where YAML may refuse them, so a second try replaces them by spaces (line
    numbers stay); only then does :mod:`json` read it, without lines.
    """
    try:
        return _load_yaml(text)
    except yaml.YAMLError as e:
        if fmt == "yaml":
            raise PipelineError([_yaml_problem(e, file)]) from None
    try:
        return _load_yaml(text.replace("\t", " "))
    except yaml.YAMLError:
        pass
    duplicates: list[_Duplicate] = []

    def mapping(pairs: list[tuple[str, Any]]) -> _Mapping:
        data = _Mapping()
        for key, value in pairs:
            if key in data:
                duplicates.append(_Duplicate(data, key, None, None, data[key], None))
            data[key] = value
        return data

    try:
        return json.loads(text, object_pairs_hook=mapping), duplicates
    except json.JSONDecodeError as e:
        problem = Problem(f"invalid JSON: {e.msg} (column {e.colno})", file=file, line=e.lineno)
        raise PipelineError([problem]) from None


def _load_yaml(text: str) -> tuple[Any, list[_Duplicate]]:
    loader = _LineLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def _yaml_problem(error: yaml.YAMLError, file: str) -> Problem:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        message = f"invalid YAML: {error.problem or error.context}"
        hint = None
        if error.problem and "'\\t'" in error.problem:
            hint = "indent YAML with spaces, not tabs"
        elif error.context and error.problem:
            hint = error.context
            if error.context_mark is not None and error.context_mark is not mark:
                hint += f" started on line {error.context_mark.line + 1}"
        return Problem(message, file=file, line=mark.line + 1 if mark else None, hint=hint)
    return Problem(f"invalid YAML: {error}", file=file)

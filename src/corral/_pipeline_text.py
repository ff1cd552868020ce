"""Reading a pipeline file into plain data, and knowing where each key and item was written.

Two readers give the same data (dicts, lists, str, int, float, bool, None):

- **JSON** is read by :mod:`json`'s C parser, without positions: a valid file is never read
  twice. Only when the file has a problem to report is it read again, by ``json``'s own
  pure-Python scanner with each value's offset recorded (:class:`_LocatedJson`), so that every
  problem names its line.
- **YAML** is read as a stream of parser events, from libyaml's C parser where PyYAML was built
  with it (``yaml.CParser``) or from PyYAML's pure-Python parser (the same events), and
  composed here (:func:`_compose_yaml`) under the **YAML 1.2 core schema**: ``1e3`` and
  ``3e-05`` are floats, ``yes``/``on``/``no``/``off`` are text, ``0o17`` and ``0x1F`` are
  integers, and there are no dates. Lines cost nothing extra here: each event carries its mark.

Both record every key written twice in one mapping (:class:`_Duplicate`; the mapping keeps the
last value) and keep to the same limits, so that a hostile file is an error and never a hang,
a crash or a blown memory budget:

- values nest at most :data:`MAX_DEPTH` levels (the top-level mapping is level 1);
- an integer is at most :data:`MAX_DIGITS` digits, and a decimal number must fit a float
  (``1e999`` is an error; YAML's ``.inf`` and ``.nan`` are the explicit spellings);
- JSON's non-standard ``NaN`` and ``Infinity`` are refused;
- YAML aliases may add at most :data:`MAX_ALIAS_VALUES` values to the file, or 10 for each
  value written in it, whichever is more (a "billion laughs" file is refused as soon as its
  expansion passes that, while it is still a few hundred bytes in memory);
- YAML tags: only the core schema's (``!!str``, ``!!int``, ``!!float``, ``!!bool``,
  ``!!null``, ``!!seq``, ``!!map``) and the non-specific ``!`` (the scalar is text); a tagged
  value must be valid for its tag. The ``<<`` merge key of YAML 1.1 is kept: it merges a
  mapping, or a list of mappings (earlier ones win), under the keys written beside it.

Every failure here is a :class:`~corral._errors.PipelineError` naming the file and line.
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import json.scanner
import re
import sys
from collections.abc import Hashable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import yaml
import yaml.events as ev

from corral._errors import PipelineError, Problem

MAX_DEPTH = 100
MAX_DIGITS = 4300  # Python's own limit for converting between int and str
MAX_ALIAS_VALUES = 1_000_000
ALIAS_RATIO = 10

# libyaml's parser where PyYAML was built with it; None: PyYAML's pure-Python one.
_C_PARSER: Any
try:
    from yaml._yaml import CParser as _C_PARSER
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _C_PARSER = None


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

    mapping: dict[Any, Any]
    key: Any
    line: int | None  # of the repeat
    first: int | None  # of the first time the key was written
    shadowed: Any  # the value the repeat replaced...
    shadowed_line: int | None  # ...and the line of its key


class Loaded(NamedTuple):
    """What a file held: its data, the keys written twice, and whether lines are known."""

    data: Any
    duplicates: list[_Duplicate]
    located: bool  # the containers are _Mapping and _Sequence, with lines


class _Refused(Exception):
    """A value the loader will not read; ``line`` None: at the reader's current position."""

    def __init__(self, message: str, line: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.hint = hint


class _NeedsLines(Exception):
    """The fast JSON reader met something to report: read again, with positions."""


# --------------------------------------------------------------------------- reading files
def read_file(file: Path) -> str:
    """The text of ``file``; a missing, unreadable or non-UTF-8 file is a problem."""

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


def load_text(text: str, file: str, fmt: str | None, *, located: bool = False) -> Loaded:
    """Parse ``text`` as ``fmt`` (``"yaml"``, ``"json"``, or None: JSON if it starts with
    ``{`` and reads as JSON, else YAML). ``located``: JSON with lines too (YAML always has
    them). Raises :class:`PipelineError` for text that cannot be read."""
    if fmt is None:
        if not text.lstrip().startswith("{"):
            return _load_yaml(text, file)
        try:
            return _load_json(text, file, located=located)
        except PipelineError as json_error:
            try:
                return _load_yaml(text, file)
            except PipelineError:
                raise json_error from None
    if fmt == "json":
        return _load_json(text, file, located=located)
    return _load_yaml(text, file)


def _problem(file: str, message: str, line: int | None, hint: str | None = None) -> PipelineError:
    return PipelineError([Problem(message, file=file, line=line, hint=hint)])


# --------------------------------------------------------------------------- numbers
_INT_DIGITS = min(MAX_DIGITS, sys.get_int_max_str_digits() or MAX_DIGITS)


def _int(text: str, base: int = 10) -> int:
    digits = len(text.lstrip("+-"))
    if digits > _INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits is too long (at most {_INT_DIGITS})",
                       hint="write it as a string")
    return int(text, base)


def _float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise _Refused(f"the number {_short(text)} is too large for a float",
                       hint="a number must be within about ±1.8e308")
    return value


_INF = float("inf")


def _json_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON value (JSON has no NaN or Infinity)",
                   hint="write a number, or null")


# --------------------------------------------------------------------------- JSON
def _load_json(text: str, file: str, *, located: bool) -> Loaded:
    if not located:
        try:
            return _json_fast(text)
        except _NeedsLines:
            pass
        except json.JSONDecodeError as e:
            raise _problem(file, f"invalid JSON: {e.msg} (column {e.colno})", e.lineno) from None
    reader = _LocatedJson(text)
    try:
        return reader.load()
    except _Refused as e:
        raise _problem(file, e.message, e.line or reader.line(), e.hint) from None
    except json.JSONDecodeError as e:
        raise _problem(file, f"invalid JSON: {e.msg} (column {e.colno})", e.lineno) from None


def _json_fast(text: str) -> Loaded:
    """JSON by the C parser, without positions; raises :class:`_NeedsLines` for anything
    that will be a problem (a repeated key, a number out of range, too deep a nesting)."""

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping = dict(pairs)
        if len(mapping) != len(pairs):
            raise _NeedsLines
        return mapping

    def checked(function: Any) -> Any:
        def check(text: str) -> Any:
            try:
                return function(text)
            except _Refused:
                raise _NeedsLines from None

        return check

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook, parse_int=checked(_int),
                          parse_float=checked(_float), parse_constant=checked(_json_constant))
    except RecursionError:
        raise _NeedsLines from None
    return Loaded(data, [], located=False)


# json's pure-Python parts, which its stubs do not declare.
_decoder: Any = json.decoder
_scanner: Any = json.scanner


class _LocatedJson:
    """JSON by :mod:`json`'s pure-Python scanner, recording where each value starts.

    ``json.scanner.py_make_scanner`` takes its object and array parsers from a context; the
    ones here wrap ``json.decoder.JSONObject`` and ``JSONArray``, and hand them a scanner
    that notes each value's offset before scanning it, so that a finished object knows the
    offset of each of its values (a key's line is its value's line).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0  # offset of the value being scanned
        self.frames: list[list[int]] = []  # per open container: its values' offsets
        self.duplicates: list[_Duplicate] = []
        self._newlines: list[int] | None = None
        context = SimpleNamespace(
            parse_object=self._object, parse_array=self._array,
            parse_string=_decoder.scanstring, strict=True,
            parse_float=_float, parse_int=_int, parse_constant=_json_constant,
            object_hook=None, object_pairs_hook=None, memo={},
        )
        self._scan_once = _scanner.py_make_scanner(context)

    def line(self, offset: int | None = None) -> int:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_left(self._newlines, self.at if offset is None else offset) + 1

    def load(self) -> Loaded:
        text = self.text
        start = _decoder.WHITESPACE.match(text, 0).end()
        try:
            data, end = self._scan(text, start)
        except StopIteration as e:
            raise json.JSONDecodeError("Expecting value", text, e.value) from None
        end = _decoder.WHITESPACE.match(text, end).end()
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return Loaded(data, self.duplicates, located=True)

    def _scan(self, text: str, offset: int) -> tuple[Any, int]:
        self.at = offset
        if self.frames:
            self.frames[-1].append(offset)
        return self._scan_once(text, offset)  # type: ignore[no-any-return]

    def _enter(self, offset: int) -> None:
        if len(self.frames) >= MAX_DEPTH:
            raise _Refused(f"values nested more than {MAX_DEPTH} levels deep",
                           self.line(offset))
        self.frames.append([])

    def _object(self, s_and_end: tuple[str, int], strict: bool, scan_once: Any, hook: Any,
                pairs_hook: Any, memo: Any, _w: Any = None) -> tuple[Any, int]:
        start = s_and_end[1]
        self._enter(start)
        pairs, end = _decoder.JSONObject(s_and_end, strict, self._scan, None, list, memo)
        offsets = self.frames.pop()
        mapping = _Mapping(self.line(start - 1))
        first: dict[str, int] = {}
        for (key, value), offset in zip(pairs, offsets, strict=True):
            line = self.line(offset)
            if key in first:
                self.duplicates.append(_Duplicate(mapping, key, line, first[key], mapping[key],
                                                  mapping.lines[key]))
            else:
                first[key] = line
            mapping[key] = value
            mapping.lines[key] = line
        return mapping, end

    def _array(self, s_and_end: tuple[str, int], scan_once: Any, _w: Any = None
               ) -> tuple[Any, int]:
        start = s_and_end[1]
        self._enter(start)
        values, end = _decoder.JSONArray(s_and_end, self._scan)
        offsets = self.frames.pop()
        sequence = _Sequence(self.line(start - 1))
        sequence.extend(values)
        sequence.lines = [self.line(offset) for offset in offsets]
        return sequence, end


# --------------------------------------------------------------------------- YAML
_CORE = "tag:yaml.org,2002:"
_STR, _INT_TAG, _FLOAT_TAG, _BOOL, _NULL = (_CORE + t for t in ("str", "int", "float", "bool",
                                                                "null"))
_SEQ, _MAP = _CORE + "seq", _CORE + "map"
_SCALAR_TAGS = (_STR, _INT_TAG, _FLOAT_TAG, _BOOL, _NULL)
_ALLOWED = "!!str, !!int, !!float, !!bool, !!null, !!seq, !!map, or ! for text"

_MISSING = object()
_MERGE = object()  # the key of a << merge
# Plain scalars that are not text, by their exact spelling (YAML 1.2 core schema).
_WORDS: dict[str, Any] = {
    "": None, "~": None, "null": None, "Null": None, "NULL": None,
    "true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
    **{sign + dot: value for sign, value in (("", _INF), ("+", _INF), ("-", -_INF))
       for dot in (".inf", ".Inf", ".INF")},
    ".nan": float("nan"), ".NaN": float("nan"), ".NAN": float("nan"),
}
_DECIMAL = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_OCTAL = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_NUMERIC_START = frozenset("0123456789+-.")


def _plain_scalar(value: str) -> Any:
    """A plain (unquoted, untagged) scalar under the YAML 1.2 core schema."""
    word = _WORDS.get(value, _MISSING)
    if word is not _MISSING:
        return word
    if value[0] not in _NUMERIC_START:
        return value
    if _DECIMAL.fullmatch(value):
        return _int(value)
    if _FLOAT.fullmatch(value):
        return _float(value)
    if _OCTAL.fullmatch(value):
        return _int(value[2:], 8)
    if _HEX.fullmatch(value):
        return _int(value[2:], 16)
    return value


def _tagged_scalar(tag: str, value: str) -> Any:
    """A scalar with an explicit core-schema tag, which it must be valid for."""
    if tag == _STR:
        return value
    resolved = _plain_scalar(value) if value else _WORDS[""]
    kind = {_INT_TAG: int, _FLOAT_TAG: float, _BOOL: bool, _NULL: type(None)}[tag]
    if tag == _FLOAT_TAG and type(resolved) is int:
        return float(resolved)
    if type(resolved) is not kind:
        raise _Refused(f"{_short(value)!r} is not a valid {_tag_name(tag)}")
    return resolved


def _tag_name(tag: str) -> str:
    """The tag as written, cut short: a hostile file's tag may be any length."""
    from corral._words import short_repr

    return short_repr("!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag, quote=False)


def _collection_tag(tag: str | None, what: str, expected: str) -> None:
    if tag is None or tag in ("!", expected):
        return
    if tag in _SCALAR_TAGS or tag in (_SEQ, _MAP):
        raise _Refused(f"{_tag_name(tag)} cannot tag a {what}")
    raise _Refused(f"tag {_tag_name(tag)} is not allowed", hint=f"use {_ALLOWED}")


class _PyParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's pure-Python parser alone: the same events as libyaml's."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


class _Frame:
    """A mapping or sequence being composed."""

    __slots__ = ("added", "anchor", "is_map", "key", "key_line", "merges", "value", "written")

    def __init__(self, value: Any, anchor: str | None, is_map: bool, written: int,
                 added: int) -> None:
        self.value = value
        self.anchor = anchor
        self.is_map = is_map
        self.key: Any = _MISSING  # a mapping's key waiting for its value
        self.key_line = 0
        self.merges: list[Any] | None = None  # the mappings of << keys, in order
        # Values written and added by aliases before it: its expanded size is the difference
        # at its end (sizes matter only for anchored values, to bound what aliases add).
        self.written = written
        self.added = added


def _load_yaml(text: str, file: str) -> Loaded:
    parser: Any = None
    composer: _YamlComposer | None = None
    try:
        parser = _C_PARSER(text) if _C_PARSER is not None else _PyParser(text)
        composer = _YamlComposer(parser)
        data = composer.compose()
    except _Refused as e:
        line = e.line or (composer.line if composer else None)
        raise _problem(file, e.message, line, e.hint) from None
    except yaml.YAMLError as e:
        raise PipelineError([_yaml_problem(e, file, text, in_bytes=parser is not None
                                           and _C_PARSER is not None)]) from None
    except UnicodeError as e:  # text that is not Unicode (a lone surrogate)
        raise _problem(file, f"invalid text: {e}", None) from None
    finally:
        if parser is not None:
            parser.dispose()
    return Loaded(data, composer.duplicates, located=True)


class _YamlComposer:
    """Builds data from parser events, iteratively (any nesting is refused past the limit,
    never a recursion error), noting lines, repeated keys and alias expansion."""

    def __init__(self, parser: Any) -> None:
        self.get_event = parser.get_event
        self.duplicates: list[_Duplicate] = []
        self.anchors: dict[str, tuple[Any, int]] = {}  # name -> (value, expanded size)
        self.line = 1  # of the event being composed
        self.written = 0  # values written in the file
        self.added = 0  # values aliases add

    def compose(self) -> Any:
        get = self.get_event
        get()  # StreamStart
        event = get()
        if isinstance(event, ev.StreamEndEvent):
            return None
        root = self.document()
        event = get()
        if not isinstance(event, ev.StreamEndEvent):
            self.line = event.start_mark.line + 1
            raise _Refused("a pipeline file holds one YAML document, and this one has more",
                           hint="remove the second '---' and what follows, or merge them")
        return root

    def document(self) -> Any:
        """The document's value; the events from its start to its end are consumed."""
        try:
            return self._document()
        except _Refused as e:
            if e.line is None:
                e.line = self.line
            raise

    def _document(self) -> Any:
        # One loop over the events, written for speed: a file of 100,000 tasks is about a
        # million events. Lines are read from an event's mark only where they are kept (keys,
        # sequence items, collections) or needed (a problem).
        get = self.get_event
        scalar_event, alias_event = ev.ScalarEvent, ev.AliasEvent
        mapping_start, sequence_start = ev.MappingStartEvent, ev.SequenceStartEvent
        resolved: dict[str, Any] = {}  # plain scalar -> value: ids and names repeat a lot
        anchors = self.anchors
        stack: list[_Frame] = []
        top: _Frame | None = None  # stack[-1]
        written = self.written
        while True:
            event = get()
            kind = type(event)
            if kind is scalar_event:
                written += 1
                tag = event.tag
                text = event.value
                if tag is None:
                    if not event.implicit[0]:  # quoted
                        value = text
                    elif text == "<<" and top is not None and top.is_map and top.key is _MISSING:
                        value = _MERGE  # a plain << in a mapping's key position
                    else:
                        value = resolved.get(text, _MISSING)
                        if value is _MISSING:
                            self.line = event.start_mark.line + 1
                            value = resolved[text] = _plain_scalar(text)
                elif tag == "!":
                    value = text
                else:
                    self.line = event.start_mark.line + 1
                    if tag in _SCALAR_TAGS:
                        value = _tagged_scalar(tag, text)
                    elif tag in (_SEQ, _MAP):
                        raise _Refused(f"{_tag_name(tag)} cannot tag a scalar")
                    else:
                        raise _Refused(f"tag {_tag_name(tag)} is not allowed",
                                       hint=f"use {_ALLOWED}")
                if event.anchor is not None:
                    anchors[event.anchor] = (value, 1)
                line = 0  # read below, if kept
            elif kind is mapping_start or kind is sequence_start:
                written += 1
                line = self.line = event.start_mark.line + 1
                if len(stack) >= MAX_DEPTH:
                    raise _Refused(f"values nested more than {MAX_DEPTH} levels deep")
                if kind is mapping_start:
                    _collection_tag(event.tag, "mapping", _MAP)
                    top = _Frame(_Mapping(line), event.anchor, True, written, self.added)
                else:
                    _collection_tag(event.tag, "sequence", _SEQ)
                    top = _Frame(_Sequence(line), event.anchor, False, written, self.added)
                stack.append(top)
                continue
            elif kind is alias_event:
                written += 1
                line = self.line = event.start_mark.line + 1
                value = self.alias(event.anchor, stack, written)
            elif top is not None and (kind is ev.MappingEndEvent or kind is ev.SequenceEndEvent):
                frame = stack.pop()
                top = stack[-1] if stack else None
                value = frame.value
                line = value.line
                if frame.merges:
                    value = self.merged(frame)
                if frame.anchor is not None:
                    size = written - frame.written + self.added - frame.added + 1
                    anchors[frame.anchor] = (value, size)
            else:  # DocumentStart, DocumentEnd
                continue
            # A value is complete: put it where it belongs.
            if top is None:
                self.written = written
                get()  # DocumentEnd
                return value
            if not top.is_map:  # a sequence item
                top.value.append(value)
                top.value.lines.append(line or event.start_mark.line + 1)
            elif top.key is _MISSING:  # a key
                if type(value) is _Mapping or type(value) is _Sequence:
                    self.line = value.line or self.line
                    raise _Refused(f"a mapping key must be a scalar, not {_kind(value)}")
                top.key = value
                top.key_line = line or event.start_mark.line + 1
            else:  # a value: under its key
                key = top.key
                top.key = _MISSING
                mapping = top.value
                if key is _MERGE or key in mapping:
                    self.put(top, key, value)
                else:
                    try:
                        mapping[key] = value
                    except TypeError:  # an alias to a mapping or list, as a key
                        self.line = top.key_line
                        raise _Refused(f"a mapping key must be a scalar, not {_kind(key)}"
                                       ) from None
                    mapping.lines[key] = top.key_line

    def alias(self, name: str, stack: list[_Frame], written: int) -> Any:
        """The value of ``*name``, within the limit on what aliases add."""
        found = self.anchors.get(name)
        if found is None:
            if any(frame.anchor == name for frame in stack):
                raise _Refused(f"the alias *{name} refers to itself (a recursive value)",
                               hint="YAML aliases may only repeat a finished value")
            raise _Refused(f"the alias *{name} names no anchor before it",
                           hint=f"define &{name} first")
        value, size = found
        self.added += size - 1
        limit = max(MAX_ALIAS_VALUES, ALIAS_RATIO * written)
        if self.added > limit:
            raise _Refused(
                f"YAML aliases expand this file past {limit:,} values (an alias bomb?)",
                hint=f"aliases may add at most {MAX_ALIAS_VALUES:,} values, or "
                f"{ALIAS_RATIO} per value written in the file",
            )
        return value

    def put(self, frame: _Frame, key: Any, value: Any) -> None:
        """The rare cases of a mapping's value: under a << key, or a key written again."""
        mapping, line = frame.value, frame.key_line
        if key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not sources or not all(isinstance(s, dict) for s in sources):
                raise _Refused("<< must merge a mapping, or a list of mappings", line)
            if frame.merges is None:
                frame.merges = []
            frame.merges.append(sources)
            return
        first = next((d.first for d in self.duplicates if d.mapping is mapping and d.key == key),
                     mapping.lines[key])
        self.duplicates.append(_Duplicate(mapping, key, line, first, mapping[key],
                                          mapping.lines[key]))
        mapping[key] = value
        mapping.lines[key] = line

    def merged(self, frame: _Frame) -> _Mapping:
        """The mapping with its << merges under its own keys (earlier sources win)."""
        own: _Mapping = frame.value
        result = _Mapping(own.line)
        for sources in frame.merges or ():  # each << key, in order; later ones win (as PyYAML)
            for source in reversed(sources):
                for key, value in source.items():
                    result[key] = value
                    lines: dict[Any, int] = getattr(source, "lines", {})
                    result.lines[key] = lines.get(key, own.line or 1)
        for key, value in own.items():
            result[key] = value
            result.lines[key] = own.lines[key]
        for i, dup in enumerate(self.duplicates):  # repeats point at the mapping returned
            if dup.mapping is own:
                self.duplicates[i] = dup._replace(mapping=result)
        return result


def _yaml_problem(error: yaml.YAMLError, file: str, text: str, *, in_bytes: bool) -> Problem:
    """A PyYAML error as a problem; ``in_bytes``: positions count UTF-8 bytes (libyaml)."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        message = f"invalid YAML: {error.problem or error.context}"
        if "maximum nesting depth" in message:  # libyaml's own limit (1000 levels)
            return Problem(f"values nested more than {MAX_DEPTH} levels deep", file=file,
                           line=mark.line + 1 if mark else None)
        hint = None
        if mark is not None and _at(text, mark.line, mark.column) == "\t":
            hint = "indent YAML with spaces, not tabs"
        elif error.context and error.problem:
            hint = error.context
            if error.context_mark is not None and error.context_mark is not mark:
                hint += f" started on line {error.context_mark.line + 1}"
        return Problem(message, file=file, line=mark.line + 1 if mark else None, hint=hint)
    if isinstance(error, yaml.reader.ReaderError):
        position = error.position or 0
        if in_bytes:
            line = text.encode("utf-8", "replace")[:position].count(b"\n") + 1
        else:
            line = text.count("\n", 0, position) + 1
        return Problem(f"invalid YAML: {error.reason}", file=file, line=line,
                       hint="a YAML file holds printable text only")
    return Problem(f"invalid YAML: {error}", file=file)


# --------------------------------------------------------------------------- helpers
def _at(text: str, line: int, column: int) -> str:
    """The character at a 0-based line and column of ``text`` ('' past its end)."""
    start = 0
    for _ in range(line):
        start = text.find("\n", start) + 1
        if start == 0:
            return ""
    return text[start + column: start + column + 1]


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) \
        else type(value).__name__


def _line_of(root: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest key of ``loc`` found under ``root`` (else of ``root``)."""
    if type(root) is dict:  # read without lines (JSON, until there is a problem to show)
        return None
    line: int | None = getattr(root, "line", None)
    node = root
    for part in loc:
        if isinstance(node, dict) and isinstance(part, Hashable) and part in node:
            line = getattr(node, "lines", {}).get(part, line)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            lines = getattr(node, "lines", [])
            line = lines[part] if part < len(lines) else line
            node = node[part]
        elif not isinstance(node, dict | list):
            break
        # else: a pydantic union tag, or a missing key: stay on the enclosing line
    return line

"""How the SQL stores encode what they keep, so that reading a store never runs its code.

A store may be shared (a PostgreSQL role of a CI system) or copied (a SQLite file), so whoever
can write to it must not be able to run code in the processes that read it. Hence:

- **History is JSON.** Transitions, durations and the value entries of a batch are JSON
  (:func:`dumps`/:func:`loads`, orjson: as fast as pickle was on this data, eight times faster
  than the standard library's json, and it cannot build an object). Anything a row holds that
  is not the shape the records expect is :class:`~corral._errors.CorruptHistory`.
- **Task values are data.** A value made only of ``None``, bools, ints, floats, strings, lists
  and dicts with string keys is stored as its JSON (``"json"``); one with tuples, bytes, sets,
  frozensets, non-string keys, big ints or non-finite floats as tagged JSON (``"tagged"``: each
  container a ``[tag, items]`` pair), so that it reads back with its exact types.
- **Pickles only by choice, and signed.** Any other value (a dataclass, a DataFrame) is pickled
  only when the store was opened with ``pickle_values=True`` (``CORRAL_STORE_PICKLE=1``), and
  then signed: HMAC-SHA256 over the run id, the task id and the pickle, with a key that is not
  in the store (:func:`signing_key`). A pickle whose signature does not verify with this
  process's key is never unpickled: the task counts as not stored and re-runs on resume, with
  the reason. Without the option such a value is not stored (the task re-runs on resume).
- **Old pickles are read as data only.** Schema version 4 converts what versions 1-3 pickled
  with :func:`data_only_loads`, an unpickler that refuses every global, so a crafted row from
  before cannot run code during the upgrade either.

A value entry in a batch's ``task_values``::

    [task, "json",   <the value>]                 [task, "tagged", <tagged value>]
    [task, "pickle", <base64>, <hmac hex>]        [task, "error",  <why it was not stored>]
    [task, "file",   <json|tagged|pickle>, <path>, <size>, <sha256 or hmac hex>]
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import math
import os
import pickle
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = [
    "KEY_ENV",
    "PICKLE_ENV",
    "NotData",
    "ValueCodec",
    "data_only_loads",
    "dumps",
    "key_file",
    "loads",
    "signing_key",
]

KEY_ENV: Final = "CORRAL_STORE_KEY"
PICKLE_ENV: Final = "CORRAL_STORE_PICKLE"

# Integers orjson writes as JSON numbers; larger ones are tagged (as decimal text).
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


def dumps(obj: Any) -> str:
    """``obj`` (plain data) as JSON text."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:  # a lone surrogate (an undecodable file name in an error): escape it
        return json.dumps(obj)


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """JSON text or bytes as plain data; ``ValueError`` for anything else (a pickle, say)."""
    if isinstance(text, memoryview):
        text = bytes(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        if isinstance(text, str):  # what dumps() escaped: lone surrogates
            return json.loads(text)
        raise


# ---------------------------------------------------------------------------- values as data


class NotData(TypeError):
    """The value is not made of the types the JSON formats keep."""


def _plain(v: Any) -> bool:
    """Whether ``v`` reads back from its JSON with the same types (lists stay lists)."""
    t = type(v)
    if t is str or t is bool or v is None:
        return True
    if t is int:
        return bool(_INT_MIN <= v <= _INT_MAX)
    if t is float:
        return math.isfinite(v)
    if t is list:
        return all(_plain(x) for x in v)
    if t is dict:
        return all(type(k) is str and _plain(x) for k, x in v.items())
    return False


def _tag(v: Any) -> Any:
    """``v`` as tagged JSON: scalars as themselves, every container as ``[tag, items]``."""
    t = type(v)
    if t is str or t is bool or v is None:
        return v
    if t is int:
        return v if _INT_MIN <= v <= _INT_MAX else ["I", str(v)]
    if t is float:
        return v if math.isfinite(v) else ["X", repr(v)]
    if t is list:
        return ["L", [_tag(x) for x in v]]
    if t is tuple:
        return ["T", [_tag(x) for x in v]]
    if t is dict:
        return ["D", [[_tag(k), _tag(x)] for k, x in v.items()]]
    if t is bytes:
        return ["B", base64.b64encode(v).decode()]
    if t is set:
        return ["S", [_tag(x) for x in v]]
    if t is frozenset:
        return ["F", [_tag(x) for x in v]]
    raise NotData(f"a {t.__module__}.{t.__qualname__} is not JSON data")


_UNTAG: dict[str, Callable[[Any], Any]] = {
    "L": lambda items: [_untag(x) for x in items],
    "T": lambda items: tuple(_untag(x) for x in items),
    "D": lambda pairs: {_untag(k): _untag(x) for k, x in pairs},
    "S": lambda items: {_untag(x) for x in items},
    "F": lambda items: frozenset(_untag(x) for x in items),
    "B": lambda text: base64.b64decode(text, validate=True),
    "I": int,
    "X": lambda text: float({"nan": "nan", "inf": "inf", "-inf": "-inf"}[text]),
}


def _untag(v: Any) -> Any:
    if type(v) is not list:
        if type(v) is dict:
            raise ValueError("an untagged object in a tagged value")
        return v
    tag, items = v
    return _UNTAG[tag](items)


# ---------------------------------------------------------------------------- signing


def key_file() -> Path:
    """Where this user's store key lives: ``$XDG_CONFIG_HOME/corral/store.key`` (by default
    ``~/.config/corral/store.key``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "corral" / "store.key"


def signing_key(*, create: bool) -> bytes | None:
    """The key that signs pickled values: ``$CORRAL_STORE_KEY``, else the key file (made, 0600
    with 32 random bytes, when ``create`` and there is none). None: no key here."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    path = key_file()
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            return None
        key = _make_key_file(path)
    return key or None


def _make_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # atomic, and never over a key another process just made
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes().strip()


def _signature(key: bytes, run_id: str, task_id: str, data: bytes) -> str:
    # Bound to the run and the task: a signed value moved to another task does not verify.
    head = f"corral-value-1\0{len(run_id)}:{run_id}\0{len(task_id)}:{task_id}\0".encode(
        "utf-8", "surrogateescape")
    return hmac.digest(key, head + data, "sha256").hex()


# ---------------------------------------------------------------------------- the value codec


def _pickle_dumps(value: Any) -> bytes:
    """Plain pickle when it can (ten times faster per small value), cloudpickle when it
    cannot: lambdas, local classes, and anything of ``__main__``, which plain pickle stores by
    a reference that a resuming process could not follow."""
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if b"__main__" not in data:
            return data
    except Exception:  # cloudpickle gets its chance below, and raises if it fails too
        pass
    import cloudpickle  # only loaded once a value needs it

    pickled: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return pickled


class ValueCodec:
    """Turns task values into what a batch stores, and back (see the module's note).

    ``pickle_values`` allows signed pickles for values that are not data; ``key`` is the
    signing key (default: :func:`signing_key`, read when first needed).
    """

    def __init__(self, *, pickle_values: bool = False, key: bytes | str | None = None) -> None:
        self.pickle_values = pickle_values
        self._key: bytes | None = key.encode() if isinstance(key, str) else key
        self._key_read = key is not None

    def key(self, *, create: bool) -> bytes | None:
        if self._key is None and (not self._key_read or create):
            self._key = signing_key(create=create)
            self._key_read = True
        return self._key

    # ------------------------------------------------------------------ writing
    def encode(self, value: Any) -> tuple[str, bytes]:
        """``(format, bytes)``: ``"json"`` or ``"tagged"`` JSON, or a ``"pickle"`` when the
        value is not data and pickles are allowed. Raises :class:`NotData` (or what pickling
        raised) when it cannot be stored; the message says why."""
        try:
            if _plain(value):
                return "json", orjson.dumps(value)
            return "tagged", orjson.dumps(_tag(value))
        except NotData:
            if not self.pickle_values:
                raise NotData(f"{_type_name(value)} is not JSON data, and this store keeps "
                              f"other values only with pickle_values=True "
                              f"({PICKLE_ENV}=1)") from None
        except (RecursionError, orjson.JSONEncodeError) as exc:  # nested too deep for JSON
            if not self.pickle_values:
                raise NotData(f"{_type_name(value)} cannot be stored as JSON: {exc}") from None
        return "pickle", _pickle_dumps(value)

    def sign(self, run_id: str, task_id: str, data: bytes) -> str:
        key = self.key(create=True)
        assert key is not None
        return _signature(key, run_id, task_id, data)

    # ------------------------------------------------------------------ reading
    def decode(self, fmt: str, data: bytes | Any, *, run_id: str, task_id: str,
               signature: str | None = None) -> Any:
        """The value stored as ``fmt``: ``data`` is the JSON already parsed (inline) or the
        bytes of a file. Raises ``ValueError`` naming why it cannot be read; a pickle is
        unpickled only when ``signature`` verifies."""
        if fmt == "json":
            return loads(data) if isinstance(data, bytes) else data
        if fmt == "tagged":
            try:
                return _untag(loads(data) if isinstance(data, bytes) else data)
            except (KeyError, TypeError, ValueError, binascii.Error) as exc:
                raise ValueError(f"a malformed tagged value: {exc}") from None
        if fmt != "pickle":
            raise ValueError(f"an unknown value format {fmt!r}")
        key = self.key(create=False)
        if key is None:
            raise ValueError(f"it is a signed pickle, and this process has no key to check "
                             f"it ({KEY_ENV}, or {key_file()}): not unpickled")
        if not isinstance(signature, str) or not hmac.compare_digest(
                signature, _signature(key, run_id, task_id, data)):
            raise ValueError("its signature does not verify with this process's key: not "
                             "unpickled (written with another key, or tampered with)")
        return pickle.loads(data)


def _type_name(value: Any) -> str:
    t = type(value)
    return f"a {t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else f"a {t.__name__}"


# ---------------------------------------------------------------------------- old pickles


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused {module}.{name}: only plain data is read")


def data_only_loads(data: bytes) -> Any:
    """Unpickle ``data`` that may only hold builtin containers and scalars (lists, tuples,
    dicts, sets, str, bytes, numbers, None): every global is refused, so nothing is called.
    Raises ``pickle.UnpicklingError`` (or ``ValueError``...) for anything else."""
    return _DataOnly(io.BytesIO(data)).load()

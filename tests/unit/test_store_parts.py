"""The store's pure parts, without a database: its module structure, the process identity of
the takeover rule, and the codec that keeps code out of the store."""

from __future__ import annotations

import ast
import math
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.waiting import wait_for

import corral.store
from corral.store import _codec, _owner

STORE = Path(corral.store.__file__).parent


# ---------------------------------------------------------------------------- structure


def _imports(path: Path) -> set[str]:
    """The corral modules ``path`` imports, anywhere but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("corral"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("corral")}
    return found


def test_the_store_has_no_import_cycle_and_does_not_import_the_python_api():
    modules = {f"corral.store.{p.stem}" if p.stem != "__init__" else "corral.store": p
               for p in STORE.glob("*.py")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    for module, path in modules.items():
        assert "corral._dag" not in _imports(path), f"{module} imports corral._dag"

    def visit(module: str, trail: tuple[str, ...]) -> None:
        for target in graph[module]:
            assert target not in trail, f"import cycle: {' -> '.join((*trail, target))}"
            visit(target, (*trail, target))

    for module in graph:
        visit(module, (module,))


def test_no_store_module_is_over_800_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in STORE.glob("*.py")}
    assert max(sizes.values()) <= 800, sizes


def test_the_public_names_are_exported_and_resolve():
    assert len(set(corral.store.__all__)) == len(corral.store.__all__)  # ruff keeps it sorted
    for name in corral.store.__all__:
        assert getattr(corral.store, name) is not None, name


# ---------------------------------------------------------------------------- owner


def test_this_process_is_not_gone_and_an_exited_one_is():
    me = _owner.current_process()
    if me is None:
        pytest.skip("no /proc here")
    assert not _owner.is_gone(me)
    child = subprocess.run([sys.executable, "-c", "from corral.store._owner import "
                            "current_process; print(current_process())"],
                           capture_output=True, text=True, check=True, timeout=60)
    gone = child.stdout.strip()
    assert gone.split("/")[2] != me.split("/")[2]  # another pid
    assert _owner.is_gone(gone)


def test_an_owner_is_not_gone_while_a_helper_it_started_lives():
    """Its reaper outlives a killed corral while it ends the run's commands."""
    me = _owner.current_process()
    if me is None:
        pytest.skip("no /proc here")
    code = ("import subprocess, sys; from corral.store._owner import current_process, "
            "helper_argument; helper = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(120)', *helper_argument()]); "
            "print(current_process(), helper.pid, flush=True)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    identity, helper = parent.stdout.readline().split()  # type: ignore[union-attr]
    parent.wait(timeout=60)  # the owner is gone; its helper lives on (reparented)
    parent.stdout.close()  # type: ignore[union-attr]
    try:
        assert not _owner.is_gone(identity)
    finally:
        os.kill(int(helper), 9)
    wait_for(lambda: _owner.is_gone(identity), "the helper to be gone")


def test_a_reused_pid_or_another_machine_is_not_taken_for_the_owner():
    me = _owner.current_process()
    if me is None:
        pytest.skip("no /proc here")
    boot, namespace, pid, started, uid = me.split("/")
    assert _owner.is_gone(f"{boot}/{namespace}/{pid}/{int(started) + 1}/{uid}")  # pid reused
    for other in (f"other-boot/{namespace}/999999999/1/{uid}", f"{boot}/1/999999999/1/{uid}",
                  "", "garbage", f"{boot}/{namespace}/x/1/{uid}", None,
                  f"{boot}/{namespace}/999999999/1"):  # (an identity of another format)
        assert not _owner.is_gone(other), other  # not known: the lease holds


def test_a_command_name_with_spaces_and_parentheses_is_parsed(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    fields = ["S"] + ["0"] * 18 + ["12345"] + ["0"] * 20  # state, ..., starttime (field 22)
    (proc / "42" / "stat").write_text(f"42 (a (b) c) {' '.join(fields)}\n")
    monkeypatch.setattr(_owner, "_PROC", str(proc))
    assert _owner._stat(42) == ("S", "12345")
    (proc / "42" / "stat").write_text(f"42 (x) {' '.join(['Z', *fields[1:]])}\n")
    assert _owner._stat(42) == ("Z", "12345")


# ---------------------------------------------------------------------------- codec


class Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.getcwd, ())


def test_the_data_only_unpickler_reads_containers_and_refuses_every_global():
    data = [1, 2.5, "s", b"b", None, True, (1, 2), {"k": {3}}, frozenset({4}), bytearray(b"x")]
    assert _codec.data_only_loads(pickle.dumps(data, protocol=5)) == data
    for protocol in range(6):
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            _codec.data_only_loads(pickle.dumps([Evil()], protocol=protocol))


@pytest.mark.parametrize("value", [[1, (2, 3)], {1: b"x"}, {"s": {1, 2}}, [math.inf], 2**100])
def test_tagged_values_round_trip(value):
    codec = _codec.ValueCodec()
    fmt, data = codec.encode(value)
    assert fmt == "tagged"
    assert codec.decode(fmt, data, run_id="r", task_id="t") == value


def test_malformed_tagged_values_are_refused_with_a_reason():
    codec = _codec.ValueCodec()
    for bad in (b'["Q", []]', b'["B", "!!"]', b'{"a": 1}', b'["L"]'):
        with pytest.raises(ValueError, match="malformed"):
            codec.decode("tagged", bad, run_id="r", task_id="t")


def test_the_key_file_is_made_once_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(_codec.KEY_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert _codec.signing_key(create=False) is None
    key = _codec.signing_key(create=True)
    path = tmp_path / "corral" / "store.key"
    assert key is not None
    assert len(key) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert _codec.signing_key(create=True) == key
    monkeypatch.setenv(_codec.KEY_ENV, "from the environment")
    assert _codec.signing_key(create=False) == b"from the environment"


def test_json_with_an_undecodable_character_round_trips():
    text = _codec.dumps(["\udcff"])
    assert text.isascii()
    assert _codec.loads(text) == ["\udcff"]
    with pytest.raises(ValueError):
        _codec.loads(pickle.dumps([1]))

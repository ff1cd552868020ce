"""How ``call:`` finds modules (corral._imports): the import path, errors, and the checks
with and without importing. Each test writes modules with names of its own into tmp_path and
restores sys.path and sys.modules afterwards."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from corral._errors import CallNotFound
from corral._imports import add_to_sys_path, check_calls, resolve_call


@pytest.fixture(autouse=True)
def clean_imports(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def pkg(tmp_path):
    """A unique top-level name, and a function writing modules under tmp_path."""
    name = f"m_{uuid.uuid4().hex[:8]}"

    def write(relative: str, text: str = "") -> None:
        path = tmp_path / relative.replace("NAME", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")

    return name, write


def test_directories_are_appended_once_and_never_put_first(tmp_path):
    first = sys.path[0]
    add_to_sys_path([str(tmp_path), str(tmp_path / "."), str(tmp_path)])
    assert sys.path[0] == first
    assert sys.path[-1] == str(tmp_path)
    assert sys.path.count(str(tmp_path)) == 1


def test_resolve_finds_a_function_and_a_method_in_the_given_path(tmp_path, pkg):
    name, write = pkg
    write("NAME.py", """
        def f():
            return 1

        class Jobs:
            @staticmethod
            def g():
                return 2
        """)
    assert resolve_call(f"{name}:f", [str(tmp_path)])() == 1
    assert resolve_call(f"{name}:Jobs.g", [str(tmp_path)])() == 2


def test_a_missing_submodule_is_looked_for_in_its_package(tmp_path, pkg):
    name, write = pkg
    write("NAME/__init__.py")
    write("NAME/tasks.py", "def f():\n    pass\n")
    with pytest.raises(CallNotFound) as info:
        resolve_call(f"{name}.taks:f", [str(tmp_path)])
    assert f"package {name!r} has no module 'taks'" in info.value.reason
    assert info.value.hint == f"did you mean '{name}.tasks'?"
    assert info.value.searched == (str(tmp_path / name),)


def test_a_module_is_not_a_package(tmp_path, pkg):
    name, write = pkg
    write("NAME.py", "def f():\n    pass\n")
    for execute in (True, False):
        [problem] = check_calls([("t", f"{name}.sub:f", "p.yml", 3)], [str(tmp_path)],
                                execute=execute)
        assert "is a module, not a package" in problem.message


def test_a_value_that_is_not_callable_is_refused(tmp_path, pkg):
    name, write = pkg
    write("NAME.py", "answer = 42\n")
    with pytest.raises(CallNotFound, match="names int 'answer'"):
        resolve_call(f"{name}:answer", [str(tmp_path)])


def test_an_error_inside_the_module_is_not_taken_for_a_missing_module(tmp_path, pkg):
    name, write = pkg
    write("NAME.py", "import no_such_thing_xyz\n")
    with pytest.raises(ModuleNotFoundError) as info:
        resolve_call(f"{name}:f", [str(tmp_path)])
    assert info.value.name == "no_such_thing_xyz"
    assert f"while importing module {name!r}" in "".join(info.value.__notes__)


def test_a_target_used_by_many_tasks_is_reported_once(tmp_path):
    calls = [(f"t{k}", "no_such_module_abc:f", "p.yml", k) for k in range(1, 4)]
    [problem] = check_calls(calls, [str(tmp_path)])
    assert (problem.task, problem.line) == ("t1", 1)
    assert problem.message.endswith("(and 2 other task(s) calling it)")


@pytest.mark.parametrize(("source", "found"), [
    ("def f(): pass", True),
    ("async def f(): pass", True),
    ("class f: pass", True),
    ("f = print", True),
    ("from os import path as f", True),
    ("import sys\nif sys.platform:\n    def f(): pass", True),
    ("try:\n    from fast import f\nexcept ImportError:\n    def f(): pass", True),
    ("from os import *", True),  # cannot tell: the benefit of the doubt
    ("def __getattr__(name): ...", True),  # names made at run time
    ("def ff(): pass", False),
])
def test_without_importing_the_function_is_looked_for_in_the_source(tmp_path, pkg, source,
                                                                      found):
    name, write = pkg
    write("NAME.py", "open('ran', 'w')\n" + source + "\n")
    problems = check_calls([("t", f"{name}:f", "p.yml", 1)], [str(tmp_path)], execute=False)
    assert (problems == []) is found, problems
    if not found:
        assert "has no function 'f'" in problems[0].message
        assert problems[0].hint == "did you mean 'ff'?"
    assert name not in sys.modules  # nothing was imported...
    assert not (tmp_path / "ran").exists()  # ...and none of its code ran


def test_without_importing_a_package_module_is_found_through_its_parents(tmp_path, pkg):
    name, write = pkg
    write("NAME/__init__.py", "raise RuntimeError('must not run')\n")
    write("NAME/sub/__init__.py", "raise RuntimeError('must not run')\n")
    write("NAME/sub/jobs.py", "def run():\n    pass\n")
    ok = check_calls([("t", f"{name}.sub.jobs:run", None, None)], [str(tmp_path)],
                     execute=False)
    assert ok == []
    [missing] = check_calls([("t", f"{name}.sub.jbos:run", None, None)], [str(tmp_path)],
                            execute=False)
    assert missing.hint == f"did you mean '{name}.sub.jobs'?"


def test_importing_a_module_that_raises_is_a_problem_naming_the_error(tmp_path, pkg):
    name, write = pkg
    write("NAME.py", "x = 1 / 0\n")
    [problem] = check_calls([("t", f"{name}:f", "p.yml", 4)], [str(tmp_path)])
    assert problem.line == 4
    assert "failed: ZeroDivisionError: division by zero" in problem.message
    assert f"{name}.py:1)" in problem.message

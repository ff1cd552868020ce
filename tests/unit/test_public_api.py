"""The public surface: each public module's ``__all__`` is complete and importable.

What a user may import is exactly what these list; everything else lives in private modules
and may move. (httpx keeps the same test; ruff keeps each ``__all__`` sorted.)"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

PUBLIC = ["corral", "corral.errors", "corral.events", "corral.executors", "corral.store"]
# corral.store's helpers (resolve_url, sqlite_path, ...) are checked once the Store interface
# settles; its __all__ is importable today.
COMPLETE = [name for name in PUBLIC if name != "corral.store"]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_name_in_all_imports(name):
    module = importlib.import_module(name)
    for member in module.__all__:
        getattr(module, member)  # AttributeError if listed but missing


@pytest.mark.parametrize("name", COMPLETE)
def test_nothing_public_is_left_out_of_all(name):
    module = importlib.import_module(name)
    public = {
        member for member, value in vars(module).items()
        if not member.startswith("_") and member != "annotations"
        and not isinstance(value, ModuleType)
    }
    assert public - set(module.__all__) == set()


def test_the_task_errors_the_listener_and_the_executor_contract_are_public():
    import corral.errors
    import corral.events
    import corral.executors

    assert {"TaskTimeout", "TaskHung", "CommandFailed", "WorkerCrashed", "CorralError"} <= set(
        corral.errors.__all__)
    assert {"RunListener", "Transition", "RunInfo"} <= set(corral.events.__all__)
    assert {"Executor", "Work", "Outcome", "ExecutorSettings"} <= set(corral.executors.__all__)
    # every exception the engine raises is in the public tree
    from corral import _errors

    exceptions = {n for n, v in vars(_errors).items()
                  if isinstance(v, type) and issubclass(v, BaseException)}
    assert exceptions <= set(corral.errors.__all__)
    for name in exceptions:
        assert name in (corral.errors.__doc__ or ""), f"{name} is missing from the tree"

"""Functions that pipeline files in the tests name with ``call: tests.helpers.jobs:...``."""

from __future__ import annotations


def compute(n: int, *, scale: int = 1) -> int:
    """The sum of 0..n-1, times ``scale``."""
    return sum(range(n)) * scale


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    """Its arguments, as they arrived."""
    return args, kwargs


def say(text: str) -> str:
    """Print ``text`` (to the task's log) and return it."""
    print(text)
    return text

"""Words for people: "did you mean" among many names at a bounded cost, and values quoted
in messages without ever printing a megabyte.

Every message that quotes a value a user wrote goes through :func:`short_repr`; every hint
that guesses what they meant goes through a :class:`Suggester` (linear in the names it is
given, cached, and stopping after a fixed budget, so that a file of 20,000 unknown names is
reported at once).
"""

from __future__ import annotations

import difflib
import math
import reprlib
from collections.abc import Iterable
from typing import Any

__all__ = ["SUGGESTION_BUDGET", "Suggester", "short_repr", "suggest"]


# "Did you mean": difflib's similarity ratio at least this; names longer than _LONGEST are
# never compared (a ratio costs up to the product of the lengths).
_CUTOFF = 0.6
_LONGEST = 200
# Comparisons one Suggester makes at most: well under a second, whatever the input.
SUGGESTION_BUDGET = 50_000


class Suggester:
    """"Did you mean" among a fixed set of names, at a bounded cost.

    A ratio of at least ``cutoff`` needs lengths within a factor of ``cutoff / (2 - cutoff)``
    of each other (3/7 for the default 0.6), so only those names are compared; each word is
    looked up once; and after ``budget`` comparisons in all it suggests nothing more.
    :meth:`hint` says so once, on the first problem that gets no suggestion because of it.
    """

    def __init__(self, choices: Iterable[str], *, budget: int = SUGGESTION_BUDGET,
                 cutoff: float = _CUTOFF) -> None:
        self.by_length: dict[int, list[str]] = {}
        for choice in choices:
            if isinstance(choice, str) and len(choice) <= _LONGEST:
                self.by_length.setdefault(len(choice), []).append(choice)
        self.budget = budget
        self.cutoff = cutoff
        self.cache: dict[str, str | None] = {}
        self.stopped = False  # the budget ran out
        self._said_stopped = False

    def __call__(self, word: str) -> str | None:
        """The closest name to ``word``, or None."""
        if word in self.cache:
            return self.cache[word]
        if self.stopped or not isinstance(word, str) or len(word) > _LONGEST:
            return None
        cutoff = self.cutoff
        slack = 1e-9  # 6 * 1.2 / 0.8 is 8.999...: a length of 9 must not be left out
        low = len(word) * cutoff / (2 - cutoff) - slack
        high = len(word) * (2 - cutoff) / cutoff + slack
        lengths = [length for length in self.by_length if low <= length <= high]
        count = sum(len(self.by_length[length]) for length in lengths)
        if count > self.budget:
            self.stopped = True
            return None
        self.budget -= count
        candidates = [name for length in lengths for name in self.by_length[length]]
        matches = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
        close = self.cache[word] = matches[0] if matches else None
        return close

    def hint(self, word: str, otherwise: str | None = None) -> str | None:
        """"did you mean 'x'?", else ``otherwise``; once the budget ran out, a note so."""
        close = self(word)
        if close is not None:
            return f"did you mean {close!r}?"
        if self.stopped and not self._said_stopped:
            self._said_stopped = True
            return "no more suggestions from here on: too many names to compare"
        return otherwise


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word``, for a "did you mean" hint."""
    return Suggester(choices)(word)


class _ShortRepr(reprlib.Repr):
    """reprlib, also for dict and list subclasses (reprlib matches on the exact type name) and
    without converting enormous integers to text."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = self.maxlong = 80
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 8

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, bool) or x is None or isinstance(x, float):
            return repr(x)
        if isinstance(x, int):
            if x.bit_length() > 10_000:  # past 4300 digits str(x) raises
                return f"<an integer of about {int(x.bit_length() * math.log10(2)):,} digits>"
            return self.repr_int(x, level)
        if isinstance(x, str):
            return self.repr_str(x, level)
        if isinstance(x, dict):
            return self.repr_dict(x, level)
        if isinstance(x, list):
            return self.repr_list(x, level)
        if isinstance(x, tuple):
            return self.repr_tuple(x, level)
        return super().repr1(x, level)


_SHORT = _ShortRepr()


def short_repr(value: object, *, limit: int = 80, quote: bool = True) -> str:
    """``repr(value)`` (or a string itself, if not ``quote``) cut to about ``limit``
    characters with ``...``: a message never quotes a huge or deeply nested value in full."""
    if isinstance(value, str):
        text = repr(value[:limit]) if quote else value[:limit]
        return text + "..." if len(value) > limit else text
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

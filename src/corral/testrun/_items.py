"""Running a pytest item without knowing which item comes next.

pytest's own loop tears down a module's (or class's) fixtures after an item when the *next*
item is elsewhere, so it needs the next item before it finishes this one. A corral worker
learns its next test only when the scheduler sends it, so :class:`ItemRunner` finishes each
item keeping its module and class set up, and tears down what the next item does not share
when that item arrives (or at the end). A teardown error found then is reported, as pytest
would report it, as an error in the teardown of the item that came before.
"""

from __future__ import annotations

from typing import Any

import pytest
from _pytest.outcomes import Exit
from _pytest.runner import CallInfo

__all__ = ["ItemRunner"]


class ItemRunner:
    """Runs items of one session one at a time, in any order (for callers: :meth:`run`,
    then :meth:`finish` once)."""

    def __init__(self) -> None:
        self._last: pytest.Item | None = None

    def run(self, item: pytest.Item) -> None:
        """Run ``item``'s whole protocol (logstart, setup, call, teardown, logfinish)."""
        self._leave(item)
        # nextitem = the item's parent: its own fixtures are torn down, its module's and
        # class's kept (SetupState.teardown_exact keeps what the "next item" descends from).
        keep: Any = item.parent
        item.ihook.pytest_runtest_protocol(item=item, nextitem=keep)
        self._last = item

    def finish(self) -> None:
        """Tear down everything still set up (the session's end)."""
        self._leave(None)
        self._last = None

    def _leave(self, nextitem: pytest.Item | None) -> None:
        last = self._last
        if last is None:
            return
        stack = list(last.session._setupstate.stack)
        needed = nextitem.listchain() if nextitem is not None else []
        if stack == needed[: len(stack)]:
            return  # the next item shares everything still set up
        setup_state = last.session._setupstate
        call = CallInfo.from_call(lambda: setup_state.teardown_exact(nextitem), "teardown",
                                  reraise=(Exit, KeyboardInterrupt))
        if call.excinfo is not None:
            report = last.ihook.pytest_runtest_makereport(item=last, call=call)
            last.ihook.pytest_runtest_logreport(report=report)

"""What every test tier shares: the signals the suite's processes start with.

A shell without job control starts a background job (``scripts/check &``, a CI step run in
the background) with SIGINT ignored, and an ignored signal stays ignored across ``exec``: every
``corral`` the tests start would ignore a Ctrl-C until its own handlers are in place, and the
tests that interrupt corral at its very start would wait for a run that never heard the
signal. The tests are about corral's handling of a Ctrl-C, so they start from the default.
"""

from __future__ import annotations

import signal


def pytest_configure() -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

"""``corral test``: a pytest suite run as a corral run, one task per test.

pytest collects (same arguments, same selection, same configuration); corral's scheduler
decides the order (longest first, by the durations the store kept from earlier runs) and
which tests may run together (``@pytest.mark.corral(after=..., resources=...)``); worker
processes, each a pytest session of its own, run the tests they are sent; their reports come
back to the pytest session of the ``corral test`` process, which prints them, writes
``--junit-xml`` and decides the exit code exactly as pytest does::

    corral test ARGS ──> pytest.main(ARGS) in this process: collection, reporting, exit code
                          └─ runtestloop (_controller.py): how many workers (_suite.py)
                               ├─ none: pytest's own loop, recorded after (_serial.py)
                               └─ the tests as a graph (_suite.py)
                                  └─ corral._launch: a recorded run, executor "pytest"
                                       ├─ WorkerPool (_pool.py): N processes (_worker.py),
                                       │     forks of this process once collected (_fork.py)
                                       │     node id ──pipe──> the worker's pytest session
                                       │     reports <──pipe── (start, report..., done)
                                       └─ InlineRunner: in this process (a tiny suite that
                                          marks or --check-order keep on the scheduler)

Every pytest hook of this process is called on its main thread (:class:`~._hooks.MainThread`);
the run loop runs on a thread of its own.
"""

from __future__ import annotations

__all__: list[str] = []

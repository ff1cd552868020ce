"""corral's benchmark: corral against a bare Kahn's-algorithm floor and its peers.

Run it from the repository root with ``python -m bench`` (``python -m bench --help`` for the
options); install what it needs with ``pip install -e .[bench]``. See ``bench/README.md``.

::

    bench.cli ──(one fresh subprocess per runner and workload)──> bench.child
        │                                                          │ runners/<engine>.py
        │ <──────────────── JSON: times, extra timings, peak RSS ──┘
        └──> bench.report: metrics, targets, markdown + JSON in bench/results/
"""

"""A run started from Python (``dag.run(store=...)``, which has no lease option: 30 s) and
killed with SIGKILL is resumed from Python at once, on the same machine: its process is gone,
so its lease does not hold. Nothing that succeeded runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

from tests.helpers.waiting import wait_for

HANG_GUARD_S = 60.0

SCRIPT = '''
import time
from pathlib import Path

import corral

HERE = Path(__file__).parent


def note(name):
    with open(HERE / "executions.txt", "a") as f:
        f.write(name + "\\n")


def a():
    note("a"); return 1


def b(x):
    note("b")
    if (HERE / "block").exists():
        (HERE / "b-started").touch()
        while True:
            time.sleep(0.05)
    return x + 1


def build():
    dag = corral.DAG("killed-in-python")
    dag.add(b, dag.add(a, id="a"), id="b")
    return dag

'''


def test_a_python_run_killed_with_sigkill_is_resumed_at_once(store_url, tmp_path):
    import corral
    from corral.store import open_store

    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "block").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    run = f"import killed; killed.build().run(store={store_url!r}, log_dir=None)"
    proc = subprocess.Popen([sys.executable, "-c", run], cwd=tmp_path, env=env)
    try:
        wait_for(lambda: (tmp_path / "b-started").exists() or proc.poll() is not None,
                 "task b to start")
        assert proc.poll() is None

        def a_recorded() -> bool:
            with open_store(store_url) as store:
                runs = store.list_runs()
                return bool(runs) and store.load_run(runs[0].id).tasks["a"].state is (
                    corral.TaskState.SUCCEEDED)

        wait_for(a_recorded, "the store to record that a succeeded")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=HANG_GUARD_S)
    (tmp_path / "block").unlink()

    sys.path.insert(0, str(tmp_path))
    try:
        import killed  # type: ignore[import-not-found]

        with open_store(store_url) as store:
            [run] = store.list_runs()
            assert (run.observed_status, run.lease_live) == ("crashed", False)
            result = killed.build().run(store=store, resume=run.id, log_dir=None)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("killed", None)
    assert result.status is corral.RunStatus.SUCCEEDED
    assert result["b"].value == 2
    executions = Counter((tmp_path / "executions.txt").read_text().split())
    assert executions == Counter({"a": 1, "b": 2})  # a was reused, b ran again

"""``corral test``: the real command on small suites written in tmp_path, compared with plain
pytest where results must be equal. Timeouts are hang guards only."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from tests.acceptance.conftest import HANG_GUARD_S, RunCli, cli_env, corral_argv
from tests.helpers.processes import MARKER_VAR, marked_processes, new_marker
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

MIXED = '''
import pytest

@pytest.fixture(scope="module")
def shared():
    return {"n": 0}

def test_pass(shared):
    shared["n"] += 1

def test_fail():
    assert 1 + 1 == 3

@pytest.mark.skip(reason="not today")
def test_skip():
    pass

@pytest.mark.xfail(reason="known", strict=False)
def test_xfail():
    assert False

@pytest.mark.xfail(reason="fixed", strict=False)
def test_xpass():
    pass

@pytest.mark.parametrize("x", [1, 2, 3])
def test_param(x):
    assert x != 2

class TestGroup:
    def test_one(self):
        pass

    def test_two(self):
        pytest.skip("inside")

@pytest.fixture
def broken():
    raise RuntimeError("setup fails")

def test_setup_error(broken):
    pass

def test_warns():
    import warnings
    warnings.warn("mind this", UserWarning)
'''


def write_suite(root: Path, files: dict[str, str]) -> None:
    (root / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))


def plain_pytest(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=root,
                          env=cli_env(root), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=HANG_GUARD_S, check=False)


def summary(output: str) -> str:
    """The final summary line without its time: ``1 failed, 2 passed``."""
    line = output.strip().splitlines()[-1]
    return re.sub(r" in [\d.]+s.*", "", line.strip("= "))


def junit_outcomes(path: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = ",".join(kinds) or "passed"
    return outcomes


def test_same_outcomes_as_plain_pytest(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_mixed.py": MIXED, "test_more.py": MIXED})
    plain = plain_pytest(tmp_path, "--junit-xml", "plain.xml", "-p", "no:cacheprovider")
    ours = corral("test", "--workers", "2", "--no-store", "--junit-xml", "corral.xml")
    assert ours.returncode == plain.returncode == 1, ours.stdout + ours.stderr
    assert summary(ours.stdout) == summary(plain.stdout)
    assert ("4 failed, 10 passed, 4 skipped, 2 xfailed, 2 xpassed, 2 warnings, 2 errors"
            in ours.stdout)
    assert junit_outcomes(tmp_path / "corral.xml") == junit_outcomes(tmp_path / "plain.xml")
    assert "assert 1 + 1 == 3" in ours.stdout  # the failure's traceback, as pytest shows it


def test_workers_are_forks_of_the_collected_session(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {
        "conftest.py": '''
            import os

            def pytest_collection_finish(session):
                with open("collections.txt", "a") as f:
                    f.write(f"{os.getpid()}\\n")
        ''',
        "test_pids.py": '''
            import os

            import pytest

            @pytest.mark.parametrize("n", range(4))
            def test_pid(n):
                with open("pids.txt", "a") as f:
                    f.write(f"{os.getpid()}\\n")
        ''',
    })
    forked = corral("test", "--workers", "2", "--no-store")
    assert forked.returncode == 0, forked.stdout + forked.stderr
    assert "4 passed" in forked.stdout
    collected_in = (tmp_path / "collections.txt").read_text().split()
    assert len(collected_in) == 1  # the corral test process only: the forks have the session
    assert collected_in[0] not in (tmp_path / "pids.txt").read_text().split()
    (tmp_path / "collections.txt").unlink()
    spawned = corral("test", "--workers", "2", "--no-store", env={"CORRAL_TEST_FORK": "0"})
    assert spawned.returncode == 0, spawned.stdout + spawned.stderr
    assert "4 passed" in spawned.stdout
    # and each worker that got ready (one may be stopped before: the other ran all four)
    assert len((tmp_path / "collections.txt").read_text().split()) >= 2


def test_a_crash_fails_its_test_alone(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_crash.py": '''
        import os

        def test_before():
            pass

        def test_crash():
            os._exit(3)

        def test_after_1():
            pass

        def test_after_2():
            pass

        def test_after_3():
            pass
    '''})
    done = corral("test", "--workers", "2", "--no-store")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 4 passed" in done.stdout
    assert "FAILED test_crash.py::test_crash" in done.stdout
    assert "exited with status 3 running this test" in done.stdout


def test_timeout_stops_a_hung_test(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_hang.py": '''
        import time

        def test_hangs():
            time.sleep(600)

        def test_fine():
            pass

        def test_fine_too():
            pass
    '''})
    done = corral("test", "--workers", "2", "--timeout", "2", "--no-store")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 2 passed" in done.stdout
    assert "FAILED test_hang.py::test_hangs - Timeout: the test ran for more than 2 s" in (
        done.stdout)


def test_after_orders_and_resources_exclude(corral: RunCli, tmp_path: Path) -> None:
    # Without the marks, two workers run these at once and the asserts fail.
    write_suite(tmp_path, {"test_order.py": '''
        import os
        import time
        from pathlib import Path

        import pytest

        DONE = Path("first.done")
        LOCK = "db.lock"

        def test_first():
            time.sleep(1.0)
            DONE.write_text("yes")

        @pytest.mark.corral(after=["test_first"])
        def test_second():
            assert DONE.exists()

        def hold_db():
            fd = os.open(LOCK, os.O_CREAT | os.O_EXCL)  # fails if another test holds it
            time.sleep(0.5)
            os.close(fd)
            os.unlink(LOCK)

        @pytest.mark.corral(resources={"db": 1})
        def test_db_a():
            hold_db()

        @pytest.mark.corral(resources={"db": 1})
        def test_db_b():
            hold_db()
    '''})
    done = corral("test", "--workers", "2", "--no-store")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    # The marks are registered for plain pytest too (--strict-markers passes).
    plain = plain_pytest(tmp_path, "--strict-markers", "-p", "no:cacheprovider")
    assert plain.returncode == 0, plain.stdout


def test_selection_usage_and_exit_codes(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_sel.py": '''
        def test_alpha():
            pass

        def test_beta():
            assert False
    '''})
    only_alpha = corral("test", "--workers", "2", "--no-store", "-k", "alpha")
    assert only_alpha.returncode == 0, only_alpha.stdout
    assert "1 passed, 1 deselected" in only_alpha.stdout
    nothing = corral("test", "--no-store", "-k", "gamma")
    assert nothing.returncode == 5, nothing.stdout  # pytest: no tests collected
    bad_workers = corral("test", "--workers", "many", "--no-store")
    assert bad_workers.returncode == 4
    assert "--workers must be a whole number >= 1 or 'auto', not 'many'" in bad_workers.stderr
    bad_option = corral("test", "--no-store", "--no-such-pytest-option")
    assert bad_option.returncode == 4, bad_option.stdout + bad_option.stderr
    (tmp_path / "test_broken.py").write_text("def test_(:\n")
    broken = corral("test", "--workers", "2", "--no-store")
    assert broken.returncode == 2, broken.stdout  # a collection error, as pytest reports it
    assert "ERROR test_broken.py" in broken.stdout


def test_exitfirst_and_last_failed(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_x.py": '''
        import pytest

        def test_fails_first():
            assert False

        @pytest.mark.parametrize("n", range(6))
        def test_later(n):
            pass
    '''})
    stopped = corral("test", "--workers", "1", "-x")
    assert stopped.returncode == 1, stopped.stdout
    assert summary(stopped.stdout) == "1 failed"
    assert "stopping after 1 failures" in stopped.stdout
    full = corral("test", "--workers", "2")
    assert "1 failed, 6 passed" in full.stdout
    again = corral("test", "--workers", "2", "--last-failed")
    assert again.returncode == 1
    assert "1 failed, 6 deselected" in again.stdout
    assert "rerunning the 1 test that failed last time" in again.stdout


def test_auto_runs_a_tiny_suite_in_process(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_tiny.py": '''
        def test_one():
            pass

        def test_two():
            pass
    '''})
    done = corral("test", "--no-store")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "corral: 2 tests on this process" in done.stdout
    assert "2 passed" in done.stdout


def test_auto_leaves_a_tiny_suite_to_pytest_and_records_it(corral: RunCli,
                                                          tmp_path: Path) -> None:
    """The serial path (pytest's own loop): plain pytest's results, and a recorded run whose
    failures --last-failed and --failed-first read."""
    write_suite(tmp_path, {"test_mixed.py": MIXED, "test_more.py": MIXED})
    plain = plain_pytest(tmp_path, "--junit-xml", "plain.xml", "-p", "no:cacheprovider")
    ours = corral("test", "--junit-xml", "corral.xml")
    assert ours.returncode == plain.returncode == 1, ours.stdout + ours.stderr
    assert "corral: 24 tests on this process" in ours.stdout
    assert summary(ours.stdout) == summary(plain.stdout)
    assert junit_outcomes(tmp_path / "corral.xml") == junit_outcomes(tmp_path / "plain.xml")
    runs = corral("runs")
    assert f"pytest:{tmp_path}" in runs.stdout, runs.stdout
    assert "failed" in runs.stdout
    again = corral("test", "--lf")
    assert "rerunning the 6 tests that failed last time" in again.stdout, again.stdout
    assert summary(again.stdout) == "4 failed, 18 deselected, 2 errors"
    first = corral("test", "--ff", "-v", "-p", "no:cacheprovider")
    results = [line for line in first.stdout.splitlines() if " PASSED" in line
               or " FAILED" in line or " ERROR" in line]
    assert all(" PASSED" not in line for line in results[:6]), first.stdout
    assert summary(first.stdout) == summary(plain.stdout)


def test_auto_keeps_a_marked_tiny_suite_on_corrals_scheduler(corral: RunCli,
                                                              tmp_path: Path) -> None:
    """A suite that uses @pytest.mark.corral runs in this process in corral's order, not in
    pytest's own loop (which would ignore after=)."""
    write_suite(tmp_path, {"test_marked.py": '''
        import pytest

        RAN = []

        @pytest.mark.corral(after=["test_b"])
        def test_a():
            assert RAN == ["b"]

        def test_b():
            RAN.append("b")
    '''})
    done = corral("test", "--no-store")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "corral: 2 tests on this process" in done.stdout
    assert "2 passed" in done.stdout


def test_a_costly_shared_fixture_stays_on_one_worker(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {
        "test_db.py": '''
            import time

            import pytest

            @pytest.fixture(scope="module")
            def db():
                with open("setups.txt", "a") as f:
                    f.write("x")
                time.sleep(0.3)
                return 1

            @pytest.mark.parametrize("n", range(6))
            def test_db(db, n):
                time.sleep(0.05)
        ''',
        "test_other.py": '''
            import time

            import pytest

            @pytest.mark.parametrize("n", range(6))
            def test_other(n):
                time.sleep(0.2)
        ''',
    })
    first = corral("test", "--workers", "2")  # measures the fixture's cost
    assert first.returncode == 0, first.stdout + first.stderr
    (tmp_path / "setups.txt").unlink()
    second = corral("test", "--workers", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "12 passed" in second.stdout
    assert (tmp_path / "setups.txt").read_text() == "x"  # set up once, not once per worker


def test_no_worker_outlives_a_killed_corral_test(tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_long.py": '''
        import time

        def test_one():
            time.sleep(600)

        def test_two():
            time.sleep(600)
    '''})
    marker = new_marker()
    proc = subprocess.Popen(corral_argv("test", "--workers", "2", "--no-store"), cwd=tmp_path,
                            env=cli_env(tmp_path, {MARKER_VAR: marker}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # The workers are its children (forks, with its command line): once it is killed they
    # are orphans, found by the pids they had.
    seen: set[int] = set()
    try:
        def workers() -> set[int]:
            return {pid for pid, ppid, _ in marked_processes(marker) if ppid == proc.pid}

        def two_workers() -> bool:
            seen.clear()
            seen.update(workers())
            return len(seen) == 2

        wait_for(two_workers, "two workers")
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not seen & {pid for pid, _, _ in marked_processes(marker)},
             "the workers to end with their corral test")


def test_failed_first_runs_last_times_failures_first(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_ff.py": '''
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_fine(n):
            pass

        def test_broken():
            assert False
    '''})
    assert corral("test", "--workers", "1").returncode == 1
    again = corral("test", "--workers", "1", "--ff", "-v")
    assert again.returncode == 1
    results = [line for line in again.stdout.splitlines()
               if line.startswith("test_ff.py::") and ("PASSED" in line or "FAILED" in line)]
    assert results[0].startswith("test_ff.py::test_broken FAILED"), again.stdout
    assert len(results) == 5


def test_check_order_reports_order_dependent_tests(corral: RunCli, tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_state.py": '''
        import pytest

        STATE = []

        def test_setup_state():
            STATE.append(1)

        @pytest.mark.corral(after=["test_pollute"])  # corral runs it where pytest does not
        def test_needs_state():
            assert STATE == [1]

        def test_pollute():
            STATE.append(2)

        def test_plain_failure():
            assert False
    '''})
    plain = plain_pytest(tmp_path, "-p", "no:cacheprovider")
    assert summary(plain.stdout) == "1 failed, 3 passed"
    done = corral("test", "--workers", "1", "--no-store", "--check-order")
    assert done.returncode == 1, done.stdout + done.stderr
    assert summary(done.stdout) == "2 failed, 2 passed"
    assert "ORDER-DEPENDENT test_state.py::test_needs_state: failed here" in done.stdout
    assert "ORDER-DEPENDENT test_state.py::test_plain_failure" not in done.stdout

"""The pure parts of ``corral test``: its own options, estimates, how many workers."""

from __future__ import annotations

import pytest

from corral.cli._test import UsageProblem, parse_test_args
from corral.testrun._suite import UNKNOWN_S, choose_workers, estimates, start_cost


def test_corral_options_are_picked_out_and_the_rest_goes_to_pytest() -> None:
    parsed = parse_test_args(["tests", "--workers", "3", "-k", "not slow", "--timeout=2.5",
                              "--lf", "-x", "--store", "sqlite:///x.db", "--", "--workers"],
                             env={})
    assert parsed.workers == 3
    assert parsed.timeout == 2.5
    assert parsed.last_failed
    assert not parsed.failed_first
    assert parsed.store_url == "sqlite:///x.db"
    assert parsed.pytest_args == ["tests", "-k", "not slow", "-x", "--", "--workers"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "0"], "--workers must be a whole number >= 1 or 'auto', not '0'"),
    (["--workers=two"], "not 'two'"),
    (["--workers"], "--workers needs a value"),
    (["--timeout", "-1"], "--timeout must be a number of seconds > 0"),
    (["--timeout", "nan"], "--timeout must be a number of seconds > 0"),
])
def test_bad_corral_options_say_why(argv: list[str], message: str) -> None:
    with pytest.raises(UsageProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_test_args(argv, env={})


def test_options_from_the_environment_and_auto() -> None:
    parsed = parse_test_args([], env={"CORRAL_TEST_WORKERS": "4", "CORRAL_TEST_TIMEOUT": "9",
                                      "CORRAL_TEST_CHECK_ORDER": "1"})
    assert (parsed.workers, parsed.timeout, parsed.check_order) == (4, 9.0, True)
    assert parse_test_args(["--timeout", "3"], env={"CORRAL_TEST_TIMEOUT": "9"}).timeout == 3
    assert parse_test_args(["--workers", "auto"], env={"CORRAL_TEST_WORKERS": "4"}).workers is None


def test_unknown_tests_get_their_modules_average_else_the_suites() -> None:
    known = {"a.py::t1": 1.0, "a.py::t2": 3.0, "b.py::t1": 8.0}
    got = estimates(["a.py::t1", "a.py::new", "b.py::new", "c.py::new"], known)
    assert got == {"a.py::t1": 1.0, "a.py::new": 2.0, "b.py::new": 8.0, "c.py::new": 4.0}
    assert estimates(["x.py::t"], {}) == {"x.py::t": UNKNOWN_S}


def test_a_tiny_suite_stays_in_one_process_and_a_long_one_spreads() -> None:
    tiny = {f"t.py::t{i}": 0.001 for i in range(200)}
    assert choose_workers(tiny, start_s=0.8, cpus=8) == 1
    long = {f"t.py::t{i}": 0.5 for i in range(40)}
    assert choose_workers(long, start_s=0.8, cpus=2) == 2
    # one long test holds the suite back: more workers than it allows buy nothing
    tail = {"t.py::slow": 10.0, **{f"t.py::t{i}": 0.2 for i in range(40)}}
    assert choose_workers(tail, start_s=0.8, cpus=8) == 2


def test_forked_workers_pay_for_themselves_sooner() -> None:
    # Shaped like boltons: ~500 short tests and one of 1.2 s, collected in 0.7 s. Workers
    # that collect again cost more than they save; forks of the collected session do not.
    suite = {"t.py::slow": 1.2, **{f"t.py::t{i}": 0.003 for i in range(500)}}
    assert choose_workers(suite, start_s=start_cost(0.7, fork=False), cpus=2) == 1
    assert choose_workers(suite, start_s=start_cost(0.7, fork=True), cpus=2) == 2
    # The trips to the workers overlap the longest test: a suite held up by it still spreads.
    held_up = {"t.py::slow": 1.2, **{f"t.py::t{i}": 0.001 for i in range(500)}}
    assert choose_workers(held_up, start_s=start_cost(0.7, fork=True), cpus=2) == 2

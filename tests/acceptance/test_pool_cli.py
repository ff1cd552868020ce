"""``corral worker --min-workers/--max-workers`` and ``corral workers``' health options: the
bad input a user can type, refused before anything starts."""

from __future__ import annotations

import pytest
from tests.helpers.redis import namespace_url


@pytest.fixture
def url():
    with namespace_url() as u:
        yield u


@pytest.mark.parametrize(("args", "says"), [
    (("--min-workers", "3", "--max-workers", "2"), "--max-workers (2) is under --min-workers (3)"),
    (("--max-workers", "0"), "0 is not in the range x>=1"),
    (("--max-workers", "2", "--target-utilisation", "0"), "--target-utilisation"),
    (("--max-workers", "2", "--scale-interval", "0"), "--scale-interval must be > 0"),
    (("--metrics-port", "9999",), "--metrics-port is a pool's"),
])
def test_a_bad_pool_is_refused_with_exit_2(corral, url, args, says):
    done = corral("worker", "--broker", url, *args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr


def test_a_pool_whose_broker_is_unreachable_exits_3(corral):
    done = corral("worker", "--broker", "redis://127.0.0.1:1/0", "--max-workers", "2")
    assert done.returncode == 3, done.stderr
    assert "cannot reach the broker" in done.stderr


def test_workers_refuses_a_latency_threshold_of_zero(corral, url):
    done = corral("workers", "--broker", url, "--max-latency", "0")
    assert done.returncode == 2, done.stderr
    assert "--max-latency" in done.stderr


def test_a_metrics_port_in_use_is_refused_with_exit_2(corral, url):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = corral("worker", "--broker", url, "--max-workers", "2", "--metrics-port",
                      str(port))
    assert done.returncode == 2, done.stderr
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1" in done.stderr


def test_a_health_window_of_zero_is_refused_with_exit_2(corral, url):
    done = corral("worker", "--broker", url, "--health-window", "0")
    assert done.returncode == 2, done.stderr
    assert "--health-window must be > 0" in done.stderr

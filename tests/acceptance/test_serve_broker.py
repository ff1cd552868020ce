"""``corral serve --broker``: a broker (or store) that cannot be used at start exits 3, naming
its URL with the password hidden, before the server listens."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("fastapi")


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_an_unreachable_broker_exits_3_with_the_password_hidden(corral, scheme):
    url = f"{scheme}://someone:hunter2@127.0.0.1:{_closed_port()}/0"
    done = corral("serve", "--broker", url, "--port", "0")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "hunter2" not in done.stderr
    assert f"{scheme}://someone:***@127.0.0.1" in done.stderr
    assert "serving on" not in done.stderr


def test_an_unreachable_store_exits_3(corral):
    url = f"postgresql://someone:hunter2@127.0.0.1:{_closed_port()}/db"
    done = corral("serve", "--store", url, "--port", "0")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "hunter2" not in done.stderr
    assert "***" in done.stderr

"""uvicorn serving an app in a thread, on a free port of 127.0.0.1, for the server tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

HANG_GUARD_S = 60.0  # seconds: a hang guard, never an assertion


class LiveServer:
    """``with LiveServer(app) as s:`` serves ``app`` at ``s.url`` until the block ends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                access_log=False, lifespan="on", ws="none",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + HANG_GUARD_S
        while not self.server.started:
            assert self.thread.is_alive(), "the server died on startup"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        sock = self.server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(HANG_GUARD_S)
        assert not self.thread.is_alive(), "the server did not stop"

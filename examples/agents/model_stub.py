"""A local stand-in for a model API and a search tool, so that the agents example runs offline.

One ``ThreadingHTTPServer`` on 127.0.0.1 (a free port), in a daemon thread of the run's process:

- ``POST /v1/complete`` ``{"role": ..., "prompt": ...}`` answers ``{"text": ...}``: a "model"
  that is deterministic (it condenses its prompt), so the example's output is the same each time.
- ``GET /search?q=TOPIC`` answers ``{"facts": [...]}``, but fails (503) its first
  ``fail_first`` calls: a flaky tool that recovers, for the circuit breaker to deal with.

``calls`` counts what was asked, for the example's last step to report.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

FACTS = {
    "redis": ["in-memory data structures", "single-threaded command loop",
              "persistence by snapshots or an append-only file"],
    "postgres": ["relational, SQL", "MVCC: readers never block writers",
                 "write-ahead log for durability"],
    "sqlite": ["a library, not a server", "one file per database"],
}


class Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fail_first: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.calls = {"complete": 0, "search": 0, "search_failed": 0}
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,),
                                       name="model-stub", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, what: str) -> int:
        with self.lock:
            self.calls[what] += 1
            return self.calls[what]


class _Handler(BaseHTTPRequestHandler):
    server: Stub

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path != "/search":
            return self._reply(404, {"error": "no such endpoint"})
        n = self.server.count("search")
        if n <= self.server.fail_first:
            self.server.count("search_failed")
            return self._reply(503, {"error": f"search is warming up (call {n})"})
        topic = parse_qs(url.query).get("q", [""])[0].lower()
        return self._reply(200, {"facts": FACTS.get(topic, [f"nothing known about {topic}"])})

    def do_POST(self) -> None:
        if self.path != "/v1/complete":
            return self._reply(404, {"error": "no such endpoint"})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.count("complete")
        words = str(body.get("prompt", "")).split()
        text = " ".join(words[:40]) + (" ..." if len(words) > 40 else "")
        return self._reply(200, {"text": f"({body.get('role', 'model')}) {text}"})

    def _reply(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tasks' own logs say what happened

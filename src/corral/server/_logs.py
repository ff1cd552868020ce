"""The server's logs: one JSON object per line (or readable text on a terminal).

Every record about a run carries ``run_id`` and ``task_id`` (``null`` when it is about the run
as a whole) and an ``action`` name; request records carry ``request_id``, ``method``,
``path``, ``status`` and ``duration_ms``. Pass them with ``extra=``::

    log.info("run finished", extra={"action": "run_finished", "run_id": rid, "task_id": None})

uvicorn's own loggers are routed through the same handler, so the output is one stream.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "action", "run_id", "task_id", ...}``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO run finished  action=run_finished run_id=...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items() if v is not None)
        text = f"{when} {record.levelname:<7} {record.getMessage()}"
        if extras:
            text += f"  {extras}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(*, fmt: str = "auto", level: str = "info") -> logging.Handler:
    """Send corral's and uvicorn's records to stderr: JSON unless stderr is a terminal
    (``fmt="auto"``), or as ``fmt`` says (``json``, ``text``). Returns the handler."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in ("corral", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # Requests are logged by the server's own middleware, with their request id.
    logging.getLogger("uvicorn.access").disabled = True
    return handler

"""Structured logs: one JSON object per line, with the session, run and call ids."""

from __future__ import annotations

import json
import logging
import time

_IDS = ("session_id", "run_id", "call_id", "job_id")


class JSONFormatter(logging.Formatter):
    """Formats a record as compact JSON; ids given in ``extra=`` become fields.

    Example::

        logger.info("run started", extra={"session_id": s.id, "run_id": r.id})
        # {"ts": "...", "level": "info", "logger": "toolplex.server",
        #  "msg": "run started", "session_id": "s_...", "run_id": "r_..."}
    """

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _IDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "info") -> None:
    """Send toolplex's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    for name in ("toolplex", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False

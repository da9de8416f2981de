"""Structured logs: one JSON object per line, with the session, run and call ids, and the
trace and span ids of the current OpenTelemetry span when tracing is on."""

from __future__ import annotations

import json
import logging
import sys
import time

from .auth import install_redaction, redact

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
            "msg": redact(record.getMessage()),
        }
        for key in _IDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        otel = sys.modules.get("opentelemetry.trace")
        if otel is not None:  # [telemetry] never imported here: loaded by the application
            span = otel.get_current_span().get_span_context()
            if span.is_valid:
                out["trace_id"] = format(span.trace_id, "032x")
                out["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            out["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    """Send toolplex's and uvicorn's logs to stderr as JSON lines.

    ``toolplex serve`` calls it; an app served by a plain ``uvicorn`` calls it beside
    :func:`create_app` (after uvicorn set up its own logging, so this replaces it).

    Example::

        from toolplex.server import configure_logging, create_app

        configure_logging()
        app = create_app(agent)   # uvicorn myapp:app
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    install_redaction(handler)
    for name in ("toolplex", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False

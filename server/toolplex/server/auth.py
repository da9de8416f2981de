"""Finding a request's session token, and keeping tokens out of access logs."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

SUBPROTOCOL = "toolplex.v1"
"""The WebSocket subprotocol; a token may ride along as ``bearer.<token>``."""

_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"]+")


def token_of(conn: HTTPConnection) -> str | None:
    """The bearer token: ``Authorization: Bearer``, a ``bearer.`` subprotocol, or ``?token=``."""
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    for proto in conn.headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith("bearer."):
            return proto[len("bearer."):]
    return conn.query_params.get("token")


def api_key_ok(token: str | None, keys: tuple[str, ...]) -> bool:
    """True when ``token`` is one of ``keys`` (each compared in constant time)."""
    given = hashlib.sha256((token or "").encode()).digest()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, hashlib.sha256(key.encode()).digest())
    return found and token is not None


def origin_allowed(conn: HTTPConnection, allowed: tuple[str, ...]) -> bool:
    """True for non-browser clients, the server's own origin, or an allowed one.

    Starlette's CORS middleware does not cover WebSockets, so this check stands
    against cross-site WebSocket hijacking.
    """
    origin = conn.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return urlsplit(origin).netloc == conn.headers.get("host")


class RedactTokens(logging.Filter):
    """Replaces ``token=...`` in log records (uvicorn's access log prints query strings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args)
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_IN_QUERY.sub(r"\1[redacted]", record.msg)
        return True


def install_redaction() -> None:
    """Add :class:`RedactTokens` to uvicorn's loggers, once."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())

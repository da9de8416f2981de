"""Finding a request's session token, and keeping tokens out of access logs."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from urllib.parse import unquote_plus, urlsplit

from starlette.requests import HTTPConnection

SUBPROTOCOL = "toolplex.v1"
"""The WebSocket subprotocol; a token may ride along as ``bearer.<token>``."""

_QUERY_PAIR = re.compile(r"(^|[?&;\s])([^=&;?/\s\"'#]*)=([^&;\s\"'#]*)")


def token_of(conn: HTTPConnection) -> str | None:
    """The bearer token: ``Authorization: Bearer``, a ``bearer.`` subprotocol, or ``?token=``."""
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    for proto in conn.headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith("bearer."):
            return proto[len("bearer."):]
    return query_token(conn.scope.get("query_string", b""))


def query_token(query: bytes) -> str | None:
    """The value of the query's ``token`` parameter, spelt exactly so.

    [protocol] the documented place is ``?token=``: a key that only decodes to it
    (``%74oken``) or differs in case (``TOKEN``) is not a token (and is still redacted).
    """
    for pair in query.decode("latin-1").split("&"):
        key, _, value = pair.partition("=")
        if key == "token":
            return unquote_plus(value)
    return None


def _is_token_key(key: str) -> bool:
    for _ in range(3):  # a key encoded twice over (%2574oken) still reads as a token
        decoded = unquote_plus(key)
        if decoded == key:
            break
        key = decoded
    return key.strip().lower() == "token"


def redact(text: str) -> str:
    """``text`` with the value of every query parameter whose key decodes to ``token``
    (any case, any percent-encoding) replaced by ``[redacted]``."""
    if "=" not in text:
        return text
    return _QUERY_PAIR.sub(
        lambda m: f"{m[1]}{m[2]}=[redacted]" if _is_token_key(m[2]) else m[0], text)


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
    """Redacts tokens in log records (see :func:`redact`): uvicorn's access log and its
    WebSocket lines print the path with its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_redaction(*handlers: logging.Handler) -> None:
    """Add :class:`RedactTokens` to uvicorn's loggers and to ``handlers``, once each.

    A logger's filter sees only what is logged to that very logger; a handler's sees
    everything it writes, whichever logger it came through.
    """
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error")]
    for target in (*loggers, *handlers):
        if not any(isinstance(f, RedactTokens) for f in target.filters):
            target.addFilter(RedactTokens())

"""The app's outer edge: trusted host names, CORS for listed origins, and no
state-changing request from another site.

Three pure ASGI layers, outermost first (see :func:`middleware`):

- Starlette's ``TrustedHostMiddleware``: a ``Host`` that is not loopback, the public
  URL's host or a configured one gets 400 (DNS rebinding: a foreign name that resolves
  to 127.0.0.1 carries its own name in ``Host``), on HTTP and WebSocket alike.
- :class:`ListedCors`: Starlette's ``CORSMiddleware`` for a request whose ``Origin`` is
  listed; any other request passes by it untouched, so an unlisted origin gets no CORS
  header at all (not even on a refused preflight).
- :class:`SameSiteOnly`: a POST whose ``Origin`` is foreign (not listed, not the
  server's own) gets 403 ``forbidden_origin``; a POST body that is not JSON gets 415
  ``unsupported_media``. These are the two halves of a CORS "simple" request, the kind
  a browser sends cross-site without asking first. A request without ``Origin`` (a
  server, curl) is not refused for that. Webhooks are exempt from the media check:
  they are signed, and partners choose their content type.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import origin_allowed
from .responses import error_response
from .settings import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
"""Host names a server bound to loopback answers to."""

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_EXPOSED = ("x-vercel-ai-ui-message-stream", "www-authenticate", "retry-after")


def trusted_hosts(settings: Settings) -> list[str]:
    """The ``Host`` names accepted: configured, else loopback and the public URL's host."""
    if settings.trusted_hosts:
        return list(settings.trusted_hosts)
    public = urlsplit(settings.public_url).hostname
    return [*LOOPBACK_HOSTS, *([public] if public else [])]


class ListedCors:
    """``CORSMiddleware`` for listed origins only; everything else passes by untouched."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = origins
        self.cors = CORSMiddleware(app, allow_origins=list(origins), allow_methods=["GET", "POST"],
                                   allow_headers=["*"], expose_headers=list(_EXPOSED))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = HTTPConnection(scope).headers.get("origin")
            if origin is not None and ("*" in self.origins or origin in self.origins):
                await self.cors(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class SameSiteOnly:
    """Refuse state-changing requests a browser may send cross-site without a preflight."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        if not origin_allowed(conn, self.origins):
            refusal = error_response("forbidden_origin",
                                     f"requests from {conn.headers['origin']} are not allowed")
            await refusal(scope, receive, send)
            return
        if not scope["path"].startswith("/v1/webhooks/") and _has_body(conn) and not _json(
                conn.headers.get("content-type", "")):
            await error_response("unsupported_media",
                                 "the body must be JSON (Content-Type: application/json)")(
                scope, receive, send)
            return
        await self.app(scope, receive, send)


def _has_body(conn: HTTPConnection) -> bool:
    length = conn.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in conn.headers


def middleware(settings: Settings) -> list[Middleware]:
    """The three layers, outermost first, for ``Starlette(middleware=...)``."""
    return [Middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts(settings)),
            Middleware(ListedCors, origins=settings.origins),
            Middleware(SameSiteOnly, origins=settings.origins)]

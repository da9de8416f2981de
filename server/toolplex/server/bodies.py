"""Reading a request body within a byte limit, counted as the bytes arrive."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ..decode import loads
from ..exceptions import ProtocolError


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError("too_large", f"the request body is larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to pass ``limit`` bytes.

    A declared ``Content-Length`` past the limit is refused before a byte is read; a
    chunked or lying body is refused at the chunk that crosses it. Nothing past the
    limit is ever held: the server answers 413 while the sender is still sending.

    Raises:
        ProtocolError: ``too_large``.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_json(request: Request, limit: int, empty: Any = None) -> Any:
    """The body decoded as JSON (depth-limited); ``empty`` for a blank body.

    Raises:
        ProtocolError: ``too_large``, ``too_deep`` or ``bad_json``.
    """
    raw = await read_body(request, limit)
    return loads(raw) if raw.strip() else empty

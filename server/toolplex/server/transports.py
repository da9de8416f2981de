"""Aborting the TCP connections of readers that stopped reading.

A reader the app drops (too slow, stalled) leaves its socket behind: a graceful close
flushes the send buffer first, and a peer that does not read never lets it flush, so
the connection stays established with its buffers for as long as TCP allows (a file
descriptor per dead reader). When a connection's ASGI call has ended and its transport
still holds unsent bytes ``send_timeout`` later, the peer is not reading: the
transport is aborted (RST), whatever the route (WebSocket, SSE, the adapters).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import Send

logger = logging.getLogger("toolplex.server")


def transport_of(send: Send) -> asyncio.Transport | None:
    """The asyncio transport behind an ASGI server's ``send`` (uvicorn's protocols keep it
    on the object ``send`` is bound to), or None for another server."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


def abort_if_stuck(transport: asyncio.Transport | None, after: float) -> None:
    """In ``after`` seconds, abort ``transport`` if it still holds unsent bytes."""
    if transport is None:
        return
    # A loop timer, not a task: the connection's own task has ended, and nothing waits.
    asyncio.get_running_loop().call_later(after, _abort_stuck, transport)


def _abort_stuck(transport: Any) -> None:
    try:
        stuck = transport.get_write_buffer_size() > 0
    except Exception:  # (a transport already torn down)
        return
    if stuck:
        logger.info("aborted a connection whose peer stopped reading")
        transport.abort()

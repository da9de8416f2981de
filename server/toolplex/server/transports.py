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
import math
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from starlette.types import Send

logger = logging.getLogger("toolplex.server")


def transport_of(send: Send) -> asyncio.Transport | None:
    """The transport behind an ASGI server's ``send`` (uvicorn's protocols keep it on the
    object ``send`` is bound to), or None for another server.

    Told by what it does, not its class: uvloop's transports (uvicorn's loop when uvloop
    is installed) do not derive from ``asyncio.Transport``.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if callable(getattr(transport, "get_write_buffer_size", None)) and callable(
            getattr(transport, "abort", None)):
        return transport
    return None


class StuckTransports:
    """Checks each ended connection's transport ``after`` seconds later, in one task.

    The connection's own task has ended, so the check is queued to a task of the app's
    lifespan: every entry waits the same time, so the queue is in deadline order.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._queue: MemoryObjectSendStream[tuple[float, asyncio.Transport]] | None = None

    def watch(self, transport: asyncio.Transport | None) -> None:
        """In ``after`` seconds, abort ``transport`` if it still holds unsent bytes."""
        if transport is not None and self._queue is not None:
            self._queue.send_nowait((anyio.current_time() + self.after, transport))

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Check the queued transports as their time comes, until cancelled."""
        send, receive = anyio.create_memory_object_stream[tuple[float, asyncio.Transport]](
            math.inf)
        with send, receive:
            self._queue = send
            task_status.started()
            try:
                async for deadline, transport in receive:
                    await anyio.sleep_until(deadline)
                    _abort_stuck(transport)
            finally:
                self._queue = None


def _abort_stuck(transport: Any) -> None:
    try:
        stuck = transport.get_write_buffer_size() > 0
    except Exception:  # (a transport already torn down)
        return
    if stuck:
        logger.info("aborted a connection whose peer stopped reading")
        transport.abort()

"""SIGTERM and SIGINT drain the server before the ASGI server closes its connections.

An ASGI server that gets SIGTERM closes every WebSocket at once (uvicorn: 1012) and
only then runs the app's shutdown, so readers would never see the terminal events of
the runs that shutdown cancels. Installed by the app's lifespan, the handler here
runs :meth:`~toolplex.server.hub.Hub.drain` first (runs cancelled to their terminal
events, every reader sent the log to its end and closed cleanly) and then hands the
signal to the handler it replaced (the ASGI server's own), which shuts down as usual.
A second signal during the drain goes to that handler at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import anyio

logger = logging.getLogger("toolplex.server")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def drain_on_signals(drain: Callable[[], Awaitable[None]]) -> None:
    """Until cancelled: on the first SIGTERM or SIGINT, ``drain()``, then hand the signal
    to the handler this replaced. The previous handlers are back when this ends.

    Nothing is installed off the main thread (signals are delivered there only) or for
    a signal nobody handles yet (then the process's default is what its owner wants).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
    received: list[tuple[int, FrameType | None]] = []
    wake = asyncio.Event()

    def handle(sig: int, frame: FrameType | None) -> None:
        if received:  # a second signal: the server's own handler at once
            previous[sig](sig, frame)
            return
        received.append((sig, frame))
        loop.call_soon_threadsafe(wake.set)

    for sig in _SIGNALS:
        current = signal.getsignal(sig)
        # Python's own SIGINT handler raises KeyboardInterrupt: not a server's to forward.
        if callable(current) and current is not signal.default_int_handler:
            previous[sig] = current
            signal.signal(sig, handle)
    try:
        await wake.wait()
        number, frame = received[0]
        logger.info("signal %s: draining runs and readers before shutdown", number)
        try:
            await drain()
        except Exception:
            logger.exception("drain failed; shutting down anyway")
        previous[number](number, frame)
        await anyio.sleep_forever()
    finally:
        for number, handler in previous.items():
            if signal.getsignal(number) is handle:
                signal.signal(number, handler)

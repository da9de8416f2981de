"""Per-upstream limits, and the bounded pool that sync tools' threads run on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from aiolimiter import AsyncLimiter

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UpstreamLimit:
    """What one upstream service allows: concurrent calls, and calls per period.

    Example::

        Agent(tools=[apollo], upstreams={"apollo": UpstreamLimit(concurrency=2, rate=5)})
    """

    concurrency: int | None = None
    rate: float | None = None
    """Calls per ``period`` seconds (a leaky bucket; bursts up to ``rate``)."""
    period: float = 1.0


class Upstream:
    """The live limiter of one upstream, shared by every tool that names it."""

    def __init__(self, name: str, limit: UpstreamLimit) -> None:
        self.name = name
        self.limit = limit
        self._slots = anyio.CapacityLimiter(limit.concurrency) if limit.concurrency else None
        self._rate = AsyncLimiter(limit.rate, limit.period) if limit.rate else None
        self.in_flight = 0
        self.peak = 0

    def would_wait(self) -> bool:
        """True when a call asking now would have to wait its turn."""
        if self._slots is not None and self._slots.available_tokens < 1:
            return True
        return self._rate is not None and not self._rate.has_capacity()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one concurrency slot and one rate token for the duration of an attempt."""
        if self._slots is not None:
            await self._slots.acquire()
        try:
            if self._rate is not None:
                await self._rate.acquire()
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1
        finally:
            if self._slots is not None:
                self._slots.release()


class ThreadPool:
    """A bounded set of worker threads for sync tools.

    A sync tool's thread cannot be killed. When its call is cancelled or times
    out, the thread is abandoned but keeps its slot until the function really
    returns, so repeated hangs cannot grow threads without bound: once every
    slot is held by a hung thread, further sync calls wait (and time out).

    Args:
        size: The most threads sync tools may occupy at once.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._free = anyio.Semaphore(size)
        self._limiter = anyio.CapacityLimiter(size)
        self.busy = 0
        self.abandoned = 0
        """Threads whose call gave up on them and that have not returned yet."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a pool thread; cancellation abandons the thread."""
        await self._free.acquire()
        loop = asyncio.get_running_loop()
        state = {"abandoned": False}

        def release() -> None:
            self.busy -= 1
            if state["abandoned"]:
                self.abandoned -= 1
            self._free.release()

        def work() -> T:
            try:
                return fn(*args)
            finally:
                try:
                    loop.call_soon_threadsafe(release)
                except RuntimeError:  # the loop is gone: nobody waits for the slot
                    pass

        self.busy += 1
        try:
            return await anyio.to_thread.run_sync(
                work, abandon_on_cancel=True, limiter=self._limiter
            )
        except anyio.get_cancelled_exc_class():
            state["abandoned"] = True
            self.abandoned += 1
            raise

"""Per-upstream limits, and the bounded pool that sync tools' threads run on."""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

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


class _Bucket:
    """A leaky bucket on anyio's clock: up to ``rate`` calls at once, then one every
    ``period / rate`` seconds; waiters take their turns in order."""

    def __init__(self, rate: float, period: float) -> None:
        self.rate = rate
        self._per_second = rate / period
        self._level = 0.0
        self._checked = 0.0
        self._turns = anyio.Lock()  # (first come, first served)

    def _leak(self) -> None:
        now = anyio.current_time()
        if self._level:
            self._level = max(self._level - (now - self._checked) * self._per_second, 0.0)
        self._checked = now

    def has_capacity(self) -> bool:
        """True when a call asking now would not wait."""
        self._leak()
        return self._level + 1 <= self.rate and not self._turns.locked()

    async def acquire(self) -> None:
        """Wait for room in the bucket, and take it."""
        async with self._turns:
            self._leak()
            while self._level + 1 > self.rate:
                await anyio.sleep((self._level + 1 - self.rate) / self._per_second)
                self._leak()
            self._level += 1


class Upstream:
    """The live limiter of one upstream, shared by every tool that names it."""

    def __init__(self, name: str, limit: UpstreamLimit) -> None:
        self.name = name
        self.limit = limit
        self._slots = anyio.CapacityLimiter(limit.concurrency) if limit.concurrency else None
        self._rate = _Bucket(limit.rate, limit.period) if limit.rate else None
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
        slot = _Slot()
        self.busy += 1
        try:
            return await anyio.to_thread.run_sync(
                functools.partial(self._work, slot, anyio.lowlevel.current_token(), fn, *args),
                abandon_on_cancel=True, limiter=self._limiter)
        finally:
            with slot.lock:
                # A call cancelled before a thread took it up never runs: it gives its
                # slot back now, and a thread taking it up later finds it withdrawn.
                slot.withdrawn = not slot.started
                slot.abandoned = slot.started and not slot.returned
            if slot.abandoned:
                self.abandoned += 1  # its thread gives the slot back when `fn` returns
            else:
                self._release()

    def _work(self, slot: _Slot, token: anyio.lowlevel.EventLoopToken, fn: Callable[..., T],
              *args: Any) -> T:
        with slot.lock:
            slot.started = True
            if slot.withdrawn:
                return None  # type: ignore[return-value]  # (nobody waits for it)
        try:
            return fn(*args)
        finally:
            with slot.lock:
                slot.returned = True
                abandoned = slot.abandoned
            if abandoned:
                try:  # (without waiting: from_thread.run_sync would hold the thread)
                    token.backend_class.run_sync_soon(self._release, (True,), token.native_token)
                except RuntimeError:  # the loop is gone: nobody waits for the slot
                    pass

    def _release(self, abandoned: bool = False) -> None:
        self.busy -= 1
        if abandoned:
            self.abandoned -= 1
        self._free.release()


@dataclass(eq=False, slots=True)
class _Slot:
    """One sync call's thread, as the loop and the thread both see it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False
    """A thread took the call up."""
    withdrawn: bool = False
    """The call stopped waiting before any thread took it up: none ever runs it."""
    returned: bool = False
    """``fn`` has returned (or raised) in the thread."""
    abandoned: bool = False
    """The call stopped waiting first: the thread gives the slot back itself."""

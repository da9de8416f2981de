"""The per-session event log: the single source of truth readers tail.

Runs append; WebSocket and SSE connections are readers that pull from a cursor.
A reader never holds more than its cursor, so a slow or stalled reader costs
no memory and cannot slow the run down: the log keeps a bounded window and a
cursor that falls out of it learns so (:class:`Gap`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .events import BaseEvent, checked, now_ms


@dataclass(frozen=True, slots=True)
class Gap:
    """Events ``from_seq..to_seq`` fell out of the retained window before a reader got them."""

    from_seq: int
    to_seq: int


_GONE = BaseEvent()
"""What holds a fallen event's place in the window's list until the next trim."""


class EventLog:
    """An append-only, gapless, bounded log of one session's events.

    Args:
        session_id: Stamped on every event.
        retain: How many of the newest events to keep for replay.
        head: The seq already used (a log restored after a restart goes on from it).

    Example::

        log = EventLog("s_1")
        log.append(RunStarted(run_id="r_1", trigger="user"))
        async for item in log.tail(after=0):
            ...  # events, or a Gap when the cursor is older than the window
    """

    def __init__(self, session_id: str, *, retain: int = 10_000, head: int = 0,
                 retain_bytes: int = 64 << 20, max_event_bytes: int | None = 1 << 20) -> None:
        self.session_id = session_id
        self.retain = retain
        self.retain_bytes = retain_bytes
        """The retained window's budget in bytes of JSON, beside its count."""
        self.max_event_bytes = max_event_bytes
        """No event's JSON may be larger (:class:`~toolplex.exceptions.EventTooLarge`)."""
        # A list trimmed in bulk (amortised O(1)) rather than a deque: readers index
        # into the window by seq, and deque indexing walks from an end. The window is
        # `_events[_start:]`; what lies before `_start` has fallen out and awaits the trim.
        self._events: list[BaseEvent] = []
        self._sizes: list[int] = []
        self._start = 0
        self._bytes = 0
        self._head = head
        self._visible: int | None = None
        """With :meth:`hold`: the newest seq readers may see (stored); else None."""
        # Readers park on futures of their own, woken all at once on append: not an
        # anyio.Event made per append, which costs a reader more than twice as much per
        # event (bench/README.md). A future each, so a cancelled reader cancels only its own.
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self.observers: list[Callable[[BaseEvent], None]] = []
        """Called with each stamped event on append (metrics, mirrors)."""

    @property
    def head_seq(self) -> int:
        """The seq of the newest event readers may see (0 when empty)."""
        return self._head if self._visible is None else self._visible

    def hold(self) -> None:
        """From now on readers see an appended event only once :meth:`release` reaches its
        seq: a log written through to a store shows readers only what is stored."""
        if self._visible is None:
            self._visible = self._head

    def release(self, seq: int) -> None:
        """Events up to ``seq`` are stored: readers may see them."""
        if self._visible is not None and seq > self._visible:
            self._visible = min(seq, self._head)
            self._wake()

    async def reached(self) -> int:
        """The newest seq the session's log has, wherever it is stored: ``head_seq`` here;
        a shared log asks its store (this process's view of it may lag)."""
        return self._head

    @property
    def first_seq(self) -> int:
        """The seq of the oldest retained event (head + 1 when empty)."""
        return self._head - (len(self._events) - self._start) + 1

    @property
    def retained_bytes(self) -> int:
        """The retained window's size in bytes of JSON (a lower bound)."""
        return self._bytes

    def append(self, event: BaseEvent) -> BaseEvent:
        """Stamp ``seq``, ``ts`` and ``session_id`` on the event and store it.

        Returns:
            The stamped event, its values in their JSON form (see ``toolplex.encoding``).

        Raises:
            UnserializableOutput: A value has no JSON form; nothing is logged.
            EventTooLarge: The event is over :attr:`max_event_bytes`; nothing is logged.
        """
        # [protocol] every logged event is valid JSON before it enters the log.
        event, size = checked(event, self.max_event_bytes)
        # [protocol] seq is per session, starting at 1, strictly increasing, gapless.
        stamped = event.stamp(self._head + 1, event.ts or now_ms(), self.session_id)
        self._keep(stamped, size)
        for observe in self.observers:
            observe(stamped)
        return stamped

    def insert(self, event: BaseEvent) -> bool:
        """Keep an event whose seq was assigned elsewhere (a mirror of a shared log).

        An event at or below the head is already here (False). One beyond ``head + 1``
        restarts the window there: the seqs in between are a gap to readers.
        """
        if event.seq <= self._head:
            return False
        if event.seq != self._head + 1:
            self._events.clear()
            self._sizes.clear()
            self._start = self._bytes = 0
        event, size = checked(event)
        self._keep(event, size)
        return True

    def _keep(self, event: BaseEvent, size: int) -> None:
        self._head = event.seq
        self._events.append(event)
        self._sizes.append(size)
        self._bytes += size
        # The newest event always stays: it is under max_event_bytes by construction.
        while len(self._events) - self._start > 1 and (
                len(self._events) - self._start > self.retain
                or self._bytes > self.retain_bytes):
            self._bytes -= self._sizes[self._start]
            # Let go of it now, not at the next trim: a window at its limit would
            # otherwise keep up to as many fallen events alive as it retains.
            self._events[self._start] = _GONE
            self._start += 1
        if self._start >= 64 and self._start * 2 >= len(self._events):  # amortised O(1)
            del self._events[: self._start]
            del self._sizes[: self._start]
            self._start = 0
        if self._visible is None:
            self._wake()

    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def replay(self, after: int = 0, limit: int | None = None) -> list[BaseEvent]:
        """The retained events with ``seq > after``, oldest first (at most ``limit``)."""
        start = self._start + max(after - self.first_seq + 1, 0)
        end = len(self._events) - (self._head - self.head_seq)  # (held: not yet stored)
        if limit is not None:
            end = min(end, start + limit)
        return self._events[start:end]

    def gap_after(self, after: int) -> Gap | None:
        """The missing range when a cursor at ``after`` is older than the window."""
        if after + 1 < self.first_seq:
            return Gap(after + 1, self.first_seq - 1)
        return None

    async def wait_beyond(self, seq: int) -> None:
        """Return once the log's head passes ``seq`` or the log is closed."""
        while self.head_seq <= seq and not self._closed:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done() or waiter.cancelled():
                    with contextlib.suppress(ValueError):  # (already taken by a wake)
                        self._waiters.remove(waiter)

    def close(self) -> None:
        """Wake every reader and let their tails end (the session is gone)."""
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    async def tail(self, after: int = 0) -> AsyncIterator[BaseEvent | Gap]:
        """Replay everything after ``after``, then follow new events live.

        Yields a :class:`Gap` first when ``after`` is older than the window. Ends
        when the log is closed.
        """
        cursor = after
        while True:
            gap = self.gap_after(cursor)
            if gap is not None:
                yield gap
                cursor = gap.to_seq
            batch = self.replay(cursor)
            for event in batch:
                yield event
            if batch:
                cursor = batch[-1].seq
            elif self._closed:
                return
            else:
                await self.wait_beyond(cursor)

"""The Redis backend's event log: one Redis Stream per session, shared by every process.

The embedded default keeps a session's log in memory (:class:`~toolplex.log.EventLog`)
and sessions and jobs in SQLite (:class:`~toolplex.store.Store`). With Redis:

- each session's log is a Redis Stream whose entry ids are ``<seq>-0``: a Lua script
  assigns ``seq`` from a per-session counter and XADDs in one step, so seq stays
  gapless per session whichever process appends;
- ``append`` stays synchronous (runs emit from plain functions): the event goes to a
  process-wide outbox that a writer task flushes in order, numbered so that a batch
  retried after a lost reply is not written twice;
- every process keeps a local window of the sessions it serves, fed by the writer
  with its own events once Redis has assigned their seqs, and by one tailer task with
  the others' (XREAD BLOCK on a change feed, then XRANGE of the streams that grew):
  readers tail that window exactly as in one process, and see nothing Redis has not
  stored;
- a run's appends are fenced on its session's run lease (:mod:`.lease`): once the
  lease is gone, a run declared lost cannot append after the fact.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import redis
import redis.asyncio

from ...events import BaseEvent, checked, from_dict, now_ms
from ...log import EventLog
from .. import unavailable
from .keys import (
    CHANGES,
    UNREACHABLE,
    Entry,
    async_client,
    decoded,
    entries,
    lease_key,
    session_key,
    sync_client,
)

logger = logging.getLogger("toolplex.backends.redis")


# Append events to a session's stream: KEYS log, seq, producers, lease, changes; ARGV producer,
# maxlen, ttl, fence, then (number, event JSON) pairs. A number at or below the one the
# producer last wrote was written already (a retry after a lost reply). With a fence,
# nothing is written unless the run lease still holds that value: a run whose owner
# was declared lost cannot append after the fact. Returns {head seq, events written},
# or {-1, 0} when fenced out.
_APPEND = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[4] then return {-1, 0} end
local done = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = done
local written = 0
for i = 5, #ARGV, 2 do
  local number = tonumber(ARGV[i])
  if number > done then
    seq = seq + 1
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'e', ARGV[i + 1])
    last = number
    written = written + 1
  end
end
redis.call('SET', KEYS[2], seq, 'EX', ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], last)
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if written > 0 then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 100000, '*', 's', KEYS[1], 'h', seq)
end
return {seq, written}
"""


class SharedLog(EventLog):
    """A session's log in Redis, as one process sees it.

    :meth:`append` queues the event for Redis and returns it with ``seq`` 0 (the seq
    is Redis's to assign); the local window holds only what Redis has stored (put
    there by the writer or the tailer), so ``head_seq`` and :meth:`tail` show the
    stored log.
    """

    def __init__(self, session_id: str, logs: SharedLogs, *, retain: int = 10_000) -> None:
        super().__init__(session_id, retain=retain)
        self._logs = logs
        self.fence: tuple[str, str] | None = None
        """``(run_id, lease)`` while this process owns a run of the session: that run's
        events are written only while the lease holds."""

    async def reached(self) -> int:
        """The seq Redis's counter is at (another process may have appended since the
        tailer last ran); asked from a worker thread, so a stalled Redis freezes no stream.

        Raises:
            ProtocolError: ``store_unavailable``.
        """
        key = session_key(self.session_id, "seq")
        try:
            stored = await anyio.to_thread.run_sync(self._logs.sync.get, key)
        except UNREACHABLE:
            raise unavailable() from None
        return max(self.head_seq, int(stored or 0))

    def append(self, event: BaseEvent, *, fenced: bool = True) -> BaseEvent:
        """Queue the event for Redis; ``fenced=False`` for the sweeper's terminal events
        of a run whose lease it claimed (also when that run was this process's own)."""
        # [protocol] every logged event is valid JSON before it enters the log.
        event, _ = checked(event, self.max_event_bytes)
        stamped = event.stamp(0, event.ts or now_ms(), self.session_id)
        fence = None
        if fenced and self.fence is not None and event.run_id == self.fence[0]:
            fence = self.fence[1]
        self._logs.enqueue(stamped, json.dumps(stamped.to_dict(), default=str), fence)
        for observe in self.observers:
            observe(stamped)
        return stamped


class SharedLogs:
    """The process's outbox writer and stream tailer, and the windows it keeps.

    Args:
        url: ``redis://...``.
        process: This process's id (names its outbox numbers in Redis).
        retain: Events each stream keeps (MAXLEN ~), as each local window does.
        ttl: Seconds a session's keys outlive their last append.
        down_after: Seconds of failing writes after which Redis counts as down.
    """

    def __init__(self, url: str, process: str, *, retain: int = 10_000,
                 ttl: float = 7 * 24 * 3600.0, down_after: float = 1.0) -> None:
        self.url = url
        self.retain = retain
        self.process = process
        self.ttl = int(ttl)
        self.sync = sync_client(url)
        self.logs: dict[str, SharedLog] = {}
        self._pending: list[_Item] = []
        self._number = 0
        self._written = 0
        self._more = anyio.Event()
        self._progress = anyio.Event()
        self.writer_ok = True
        """False while writes to Redis have been failing for ``down_after`` seconds."""
        self.down_after = down_after
        self.on_unreachable: list[Callable[[], None]] = []
        """Called once each time writes have been failing for ``down_after`` seconds (a
        dropped connection that the next retry gets past is not an outage)."""
        self.dropped = 0
        """Events refused by their fence (a run that lost its lease)."""

    # -- the outbox ---------------------------------------------------------------

    def enqueue(self, event: BaseEvent, payload: str, fence: str | None) -> None:
        """Queue one event for Redis (in order; flushed by :meth:`serve`)."""
        self._number += 1
        self._pending.append((event.session_id, self._number, event, payload, fence))
        self._more.set()

    async def flush(self, limit: float) -> bool:
        """Wait at most ``limit`` seconds until everything queued so far is in Redis.
        False when it is not."""
        target = self._number
        with anyio.move_on_after(limit):
            while self._written < target:
                await self._progress.wait()
            return True
        return False

    async def _write(self, client: redis.asyncio.Redis) -> None:
        sha = client.register_script(_APPEND).sha
        loaded = False
        delay, failing = 0.05, 0.0
        while True:
            if not self._pending:
                self._more = anyio.Event()
                await self._more.wait()
            batch, self._pending = self._pending, []
            groups = _groups(batch)
            while True:
                try:
                    if not loaded:  # (again after a Redis restart: NOSCRIPT below)
                        await client.script_load(_APPEND)
                        loaded = True
                    # EVALSHA straight into the pipeline: redis-py's Script objects would
                    # ask SCRIPT EXISTS first, a round trip per batch.
                    pipe = client.pipeline(transaction=False)
                    for (session_id, fence), items in groups:
                        log = self.logs.get(session_id)
                        retain = log.retain if log is not None else self.retain
                        args: list[Any] = [self.process, retain, self.ttl, fence or ""]
                        for number, _, payload in items:
                            args += [number, payload]
                        pipe.evalsha(sha, 5, session_key(session_id, "log"),
                                     session_key(session_id, "seq"),
                                     session_key(session_id, "producers"),
                                     lease_key(session_id), CHANGES, *args)
                    results = await pipe.execute()
                    break
                except redis.exceptions.NoScriptError:
                    loaded = False
                except UNREACHABLE as exc:
                    loaded = False
                    failing = failing or time.monotonic()
                    if self.writer_ok and time.monotonic() - failing >= self.down_after:
                        self.writer_ok = False
                        logger.error("Redis unreachable, %d events wait: %s", len(batch), exc)
                        for callback in list(self.on_unreachable):
                            callback()
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 0.5)
            if not self.writer_ok:
                logger.info("Redis reachable again")
            self.writer_ok, delay, failing = True, 0.05, 0.0
            for ((session_id, _), items), (head, written) in zip(groups, results, strict=True):
                if head == -1:
                    self.dropped += len(items)
                    logger.warning("%d events of a run that lost its lease were not written",
                                   len(items), extra={"session_id": session_id})
                    continue
                # Our events are the last `written` of the stream, in order: readers here
                # get them now rather than after the tailer's round trip (it skips them).
                log = self.logs.get(session_id)
                if log is not None and written == len(items) and log.head_seq == head - written:
                    for offset, (_, event, _) in enumerate(items):
                        log.insert(event.stamp(head - written + 1 + offset, event.ts,
                                               session_id))
            self._written = batch[-1][1]
            self._progress.set()
            self._progress = anyio.Event()

    # -- the windows --------------------------------------------------------------

    def log_for(self, session_id: str, retain: int) -> SharedLog:
        """The process's window on a session's log: loaded now, then followed live."""
        log = self.logs.get(session_id)
        if log is not None:
            return log
        return self._install(session_id, retain, self._read(session_id, retain))

    async def follow(self, session_id: str, retain: int) -> SharedLog:
        """:meth:`log_for`, reading the stream from a worker thread (a stalled Redis must
        not freeze the event loop)."""
        log = self.logs.get(session_id)
        if log is not None:
            return log
        stored = await anyio.to_thread.run_sync(self._read, session_id, retain)
        # (another request may have loaded it meanwhile: one window per session)
        return self.logs.get(session_id) or self._install(session_id, retain, stored)

    def _read(self, session_id: str, retain: int) -> list[Entry] | int:
        """The stream's last ``retain`` entries, or when it has none, its seq counter."""
        stored = entries(self.sync.xrevrange(session_key(session_id, "log"), count=retain))
        return stored or int(self.sync.get(session_key(session_id, "seq")) or 0)

    def _install(self, session_id: str, retain: int, stored: list[Entry] | int) -> SharedLog:
        log = SharedLog(session_id, self, retain=retain)
        if isinstance(stored, int):
            log._head = stored
        else:
            log._head = entry_seq(stored[-1][0]) - 1
            for entry_id, fields in reversed(stored):
                log.insert(_event(entry_id, fields))
        self.logs[session_id] = log
        return log

    def forget(self, session_id: str) -> None:
        """Stop following a session's log (its session left this process's memory)."""
        log = self.logs.pop(session_id, None)
        if log is not None:
            log.close()

    async def _tail(self, client: redis.asyncio.Redis) -> None:
        # One blocking read of the change feed, whatever the number of sessions followed;
        # then one pipelined XRANGE per followed session that another process wrote to.
        cursor: str | None = None
        while True:
            try:
                if cursor is None:  # at start, and after Redis was unreachable
                    last = entries(await client.xrevrange(CHANGES, count=1))
                    cursor = last[0][0] if last else "0-0"
                    await self._catch_up(client, list(self.logs.values()))
                reply = decoded(await client.xread({CHANGES: cursor}, count=1000, block=5000))
                if not reply:
                    continue
                changes = entries(reply[0][1])
                cursor = changes[-1][0]
                behind: dict[str, SharedLog] = {}
                for _, change in changes:
                    log = self.logs.get(change["s"][len("tp:s:"):-len(":log")])
                    if log is not None and int(change["h"]) > log.head_seq:
                        behind[log.session_id] = log
                await self._catch_up(client, list(behind.values()))
            except UNREACHABLE:
                cursor = None
                await anyio.sleep(0.2)

    async def _catch_up(self, client: redis.asyncio.Redis, logs: list[SharedLog]) -> None:
        """Read into each window what its stream holds beyond the window's head."""
        if not logs:
            return
        pipe = client.pipeline(transaction=False)
        for log in logs:
            pipe.xrange(session_key(log.session_id, "log"), min=f"{log.head_seq + 1}-0")
        for log, grown in zip(logs, await pipe.execute(), strict=True):
            for entry_id, fields in entries(grown):
                if entry_seq(entry_id) > log.head_seq:  # the writer may have put it there
                    log.insert(_event(entry_id, fields))

    async def serve(self) -> None:
        """Write the outbox and tail the followed logs until cancelled."""
        writer = async_client(self.url)
        tailer = async_client(self.url, timeout=None)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, writer)
                tg.start_soon(self._tail, tailer)
        finally:
            with anyio.CancelScope(shield=True):
                await writer.aclose()
                await tailer.aclose()

    def ping(self) -> bool:
        """True when Redis answers now and the last write succeeded."""
        try:
            return bool(self.sync.ping()) and self.writer_ok
        except UNREACHABLE:
            return False


_Item = tuple[str, int, BaseEvent, str, "str | None"]
"""An outbox entry: session id, outbox number, event, its JSON, fence."""
_Group = tuple[tuple[str, "str | None"], list[tuple[int, BaseEvent, str]]]


def _groups(batch: list[_Item]) -> list[_Group]:
    """Consecutive events of a session with the same fence, in order, per session."""
    groups: list[_Group] = []
    last: dict[str, _Group] = {}
    for session_id, number, event, payload, fence in batch:
        group = last.get(session_id)
        if group is None or group[0][1] != fence:
            group = last[session_id] = ((session_id, fence), [])
            groups.append(group)
        group[1].append((number, event, payload))
    return groups


def entry_seq(entry_id: str) -> int:
    """The seq of a stream entry id (``<seq>-0``)."""
    return int(entry_id.partition("-")[0])


def _event(entry_id: str, fields: dict[str, str]) -> BaseEvent:
    data = json.loads(fields["e"])
    data["seq"] = entry_seq(entry_id)
    return from_dict(data)

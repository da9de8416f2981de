"""Sessions, event logs and jobs in Redis, shared by several server processes.

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
- the job store and the session state are hashes, read and written with a
  synchronous client (a few calls per run or job, well under a millisecond on a
  local Redis; runs never wait on them per event).

Keys (all under ``tp:``):

=========================  =====================================================
``tp:s:{id}``              hash: ``token_hash``, ``history``, ``breakers``
``tp:s:{id}:log``          stream: the events, field ``e`` (JSON without ``seq``)
``tp:s:{id}:seq``          the session's last seq
``tp:s:{id}:producers``    hash: process -> last outbox number written
``tp:s:{id}:run``          the run lease (see :mod:`toolplex.server.cluster`)
``tp:s:{id}:jobs``         set: the session's job ids
``tp:j:{id}``              hash: a job row
``tp:jobs:open``           set: job ids still pending or running
``tp:waiting``             set: sessions with a job that ended, until a turn takes it
``tp:wh:{id}``             a webhook id already handled (replay guard)
``tp:runs``                hash: session id -> run lease, of every run going (for the sweeper)
``tp:conversations``       hash: ``{adapter}:{thread or chat id}`` -> session id
``tp:changes``             stream: ``{s, h}`` per append (which log grew, to which seq)
=========================  =====================================================
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
from redis.backoff import NoBackoff
from redis.retry import Retry

from .events import BaseEvent, from_dict, now_ms
from .log import EventLog
from .store import OPEN

logger = logging.getLogger("toolplex.shared")

UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)
"""What a Redis call raises while Redis is down or restarting."""

CHANGES = "tp:changes"
"""The change feed: one entry ``{s: stream key, h: head seq}`` per append batch."""
WAITING = "tp:waiting"
"""Sessions with a job that ended, until a turn takes its completions."""


def session_key(session_id: str, part: str = "") -> str:
    """``tp:s:{id}`` or ``tp:s:{id}:{part}``."""
    return f"tp:s:{session_id}:{part}" if part else f"tp:s:{session_id}"


def sync_client(url: str) -> redis.Redis:
    """A client that fails fast (0.5 s, no retries) rather than hanging while Redis is down."""
    return redis.Redis.from_url(url, protocol=2, decode_responses=True,
                                socket_timeout=1.0, socket_connect_timeout=0.5,
                                retry=Retry(NoBackoff(), 0))


def async_client(url: str, *, timeout: float | None = 2.0) -> redis.asyncio.Redis:
    """The async counterpart of :func:`sync_client` (``timeout=None`` for blocking reads)."""
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(url, protocol=2, decode_responses=True,
                                        socket_timeout=timeout, socket_connect_timeout=0.5,
                                        retry=AsyncRetry(NoBackoff(), 0))


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

    def append(self, event: BaseEvent) -> BaseEvent:
        stamped = event.stamp(0, event.ts or now_ms(), self.session_id)
        fence = None
        if self.fence is not None and event.run_id == self.fence[0]:
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
                                     session_key(session_id, "run"), CHANGES, *args)
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
        log = SharedLog(session_id, self, retain=retain)
        entries = self.sync.xrevrange(session_key(session_id, "log"), count=retain)
        if entries:
            log._head = entry_seq(entries[-1][0]) - 1
            for entry_id, fields in reversed(entries):
                log.insert(_event(entry_id, fields))
        else:
            log._head = int(self.sync.get(session_key(session_id, "seq")) or 0)
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
                    last = await client.xrevrange(CHANGES, count=1)
                    cursor = last[0][0] if last else "0-0"
                    await self._catch_up(client, list(self.logs.values()))
                reply = await client.xread({CHANGES: cursor}, count=1000, block=5000)
                if not reply:
                    continue
                entries = reply[0][1]
                cursor = entries[-1][0]
                behind: dict[str, SharedLog] = {}
                for _, change in entries:
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
        for log, entries in zip(logs, await pipe.execute(), strict=True):
            for entry_id, fields in entries:
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


# -- sessions and jobs ----------------------------------------------------------------

_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'pending' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], redis.call('HGET', KEYS[1], 'session_id'))
return 1
"""

_TAKE_UNDELIVERED = """
local taken = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local job = 'tp:j:' .. id
  local status = redis.call('HGET', job, 'status')
  if status and status ~= 'pending' and status ~= 'running'
      and redis.call('HGET', job, 'delivered') == '0' then
    redis.call('HSET', job, 'delivered', '1')
    table.insert(taken, id)
  end
end
redis.call('SREM', KEYS[2], ARGV[1])
return taken
"""

_JSON_FIELDS = ("args", "output", "error")
_NUMBERS = ("progress", "total", "created", "expires", "completed")


class RedisStore:
    """Sessions and jobs in Redis: what :class:`~toolplex.store.Store` keeps in SQLite.

    Every call is synchronous and fails fast (:data:`UNREACHABLE`) while Redis is down.
    """

    shared = True
    """Other processes change it too: nothing about it may be cached."""

    def __init__(self, url: str, *, session_ttl: float = 7 * 24 * 3600.0) -> None:
        self.url = url
        self.redis = sync_client(url)
        self.session_ttl = int(session_ttl)
        self._finish = self.redis.register_script(_FINISH)
        self._take = self.redis.register_script(_TAKE_UNDELIVERED)

    def close(self) -> None:
        self.redis.close()

    # sessions

    def save_session(self, session_id: str, token_hash: str, history: list[dict[str, Any]],
                     head_seq: int, breakers: dict[str, Any] | None = None) -> None:
        """Write a session's token hash, history and breakers."""
        key = session_key(session_id)
        fields = {"token_hash": token_hash, "history": json.dumps(history, default=str)}
        if breakers is not None:
            fields["breakers"] = json.dumps(breakers)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.session_ttl)
        pipe.execute()

    def session(self, session_id: str) -> dict[str, Any] | None:
        """A stored session: ``id, token_hash, history, breakers`` (None when unknown)."""
        row = self.redis.hgetall(session_key(session_id))
        if not row:
            return None
        return {"id": session_id, "token_hash": row["token_hash"],
                "history": json.loads(row.get("history", "[]")),
                "breakers": json.loads(row.get("breakers", "{}"))}

    def sessions(self) -> list[dict[str, Any]]:
        """Sessions load on demand from Redis: none to restore at startup."""
        return []

    def delete_session(self, session_id: str) -> None:
        self.redis.delete(session_key(session_id))

    # jobs

    def insert_job(self, job: dict[str, Any]) -> None:
        """Store a new job row."""
        row = {**job, "args": json.dumps(job["args"], default=str), "delivered": "0"}
        pipe = self.redis.pipeline()
        pipe.hset(f"tp:j:{job['id']}", mapping=row)
        pipe.sadd(session_key(job["session_id"], "jobs"), job["id"])
        pipe.sadd("tp:jobs:open", job["id"])
        pipe.execute()

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job row, JSON fields decoded."""
        row = self.redis.hgetall(f"tp:j:{job_id}")
        return _decode(row) if row else None

    def _rows(self, ids: list[str]) -> list[dict[str, Any]]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(f"tp:j:{job_id}")
        return [_decode(row) for row in pipe.execute() if row]

    def jobs(self, *, session_id: str | None = None, open_only: bool = False,
             undelivered: bool = False) -> list[dict[str, Any]]:
        """Jobs matching the filters, oldest first."""
        ids = self.redis.smembers(session_key(session_id, "jobs") if session_id is not None
                                  else "tp:jobs:open")
        rows = self._rows(list(ids))
        if open_only:
            rows = [r for r in rows if r["status"] in OPEN]
        if undelivered:
            rows = [r for r in rows if r["status"] not in OPEN and not r["delivered"]]
        return sorted(rows, key=lambda r: r["created"])

    def progress(self, job_id: str, progress: float, total: float | None,
                 message: str | None) -> None:
        fields: dict[str, Any] = {"progress": progress}
        fields.update({k: v for k, v in (("total", total), ("message", message))
                       if v is not None})
        self.redis.hset(f"tp:j:{job_id}", mapping=fields)

    def finish(self, job_id: str, status: str, output: Any = None,
               error: dict[str, Any] | None = None) -> bool:
        """End an open job, atomically: False when it had already ended (on any process)."""
        fields: list[Any] = [job_id, "status", status, "completed", time.time()]
        if output is not None:
            fields += ["output", json.dumps(output, default=str)]
        if error is not None:
            fields += ["error", json.dumps(error)]
        return bool(self._finish(keys=[f"tp:j:{job_id}", "tp:jobs:open", WAITING], args=fields))

    def mark_delivered(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.redis.hset(f"tp:j:{job_id}", "delivered", "1")

    def has_undelivered(self, session_id: str) -> bool:
        """Whether a job of the session ended since its completions were last taken."""
        return bool(self.redis.sismember(WAITING, session_id))

    def waiting(self) -> set[str]:
        """Sessions with a job that ended since their completions were last taken."""
        return self.redis.smembers(WAITING)  # type: ignore[return-value]

    def take_undelivered(self, session_id: str) -> list[dict[str, Any]]:
        """The session's ended jobs not yet handed to a run, marked delivered at once
        (atomically: two processes never both take one)."""
        ids = self._take(keys=[session_key(session_id, "jobs"), WAITING], args=[session_id])
        return sorted(self._rows(list(ids)), key=lambda r: r["created"])

    def first_webhook(self, webhook_id: str, job_id: str) -> bool:
        """True the first time ``webhook_id`` is seen (kept a week); a replay returns False."""
        return bool(self.redis.set(f"tp:wh:{webhook_id}", job_id, nx=True, ex=7 * 24 * 3600))


def _decode(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for key in _JSON_FIELDS:
        if key in out:
            out[key] = json.loads(out[key])
    for key in _NUMBERS:
        if key in out:
            out[key] = float(out[key])
    out["delivered"] = out.get("delivered") == "1"
    for key in ("output", "error", "progress", "total", "message", "completed"):
        out.setdefault(key, None)
    return out

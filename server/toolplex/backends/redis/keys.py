"""The Redis backend's key schema and clients: every key toolplex keeps in Redis is named here.

Keys (all under ``tp:``):

=========================  =====================================================
``tp:s:{id}``              hash: ``token_hash``, ``history``, ``breakers``
``tp:s:{id}:log``          stream: the events, field ``e`` (JSON without ``seq``)
``tp:s:{id}:seq``          the session's last seq
``tp:s:{id}:producers``    hash: process -> last outbox number written
``tp:s:{id}:run``          the run lease (see :mod:`.lease`)
``tp:s:{id}:commands``     hash: commands (JSON) for the session's run, until its owner acts
``tp:s:{id}:jobs``         set: the session's job ids
``tp:j:{id}``              hash: a job row
``tp:jobs:open``           set: job ids still pending or running
``tp:waiting``             set: sessions with a job that ended, until a turn takes it
``tp:wh:{id}``             a webhook id already handled (replay guard)
``tp:runs``                hash: session id -> run lease, of every run going (for the sweeper)
``tp:conversations``       hash: ``{adapter}:{thread or chat id}`` -> session id
``tp:changes``             stream: ``{s, h}`` per append (which log grew, to which seq)
``tp:cmd``                 pub/sub channel: commands for a run owned by another process
=========================  =====================================================
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)
"""What a Redis call raises while Redis is down or restarting."""

CHANGES = "tp:changes"
"""The change feed: one entry ``{s: stream key, h: head seq}`` per append batch."""
WAITING = "tp:waiting"
"""Sessions with a job that ended, until a turn takes its completions."""
OPEN_JOBS = "tp:jobs:open"
"""Job ids still pending or running."""
RUNS = "tp:runs"
"""Session id -> run lease, of every run going on any process (for the sweeper)."""
COMMANDS = "tp:cmd"
"""The pub/sub channel commands for a run owned by another process travel on."""
CONVERSATIONS = "tp:conversations"
"""``{adapter}:{thread or chat id}`` -> session id."""


def session_key(session_id: str, part: str = "") -> str:
    """``tp:s:{id}`` or ``tp:s:{id}:{part}``."""
    return f"tp:s:{session_id}:{part}" if part else f"tp:s:{session_id}"


def lease_key(session_id: str) -> str:
    """``tp:s:{id}:run``: the session's run lease, which the log's appends are fenced on."""
    return session_key(session_id, "run")


def job_key(job_id: str) -> str:
    """``tp:j:{id}``: a job row."""
    return f"tp:j:{job_id}"


def worker_key(job_id: str) -> str:
    """``tp:j:{id}:worker``: which process runs a worker job (a TTL key it renews)."""
    return f"tp:j:{job_id}:worker"


def webhook_key(webhook_id: str) -> str:
    """``tp:wh:{id}``: a webhook id already handled."""
    return f"tp:wh:{webhook_id}"


Entry = tuple[str, dict[str, str]]
"""A stream entry: its id (``<seq>-0``) and its fields."""


def decoded(reply: Any) -> Any:
    """A reply as the clients return it: strings, not bytes (they are made with
    ``decode_responses=True``, which redis-py's type hints cannot see)."""
    return reply


def entries(reply: Any) -> list[Entry]:
    """A stream reply (XRANGE, XREVRANGE), decoded."""
    return cast("list[Entry]", reply)


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

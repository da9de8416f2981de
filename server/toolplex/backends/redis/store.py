"""The Redis backend's store: sessions and jobs as hashes, what SQLite keeps in one process.

Read and written with a synchronous client: a few calls per run or job, never one per
event, so runs do not wait on them while they stream.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ...store import OPEN
from .keys import (
    OPEN_JOBS,
    WAITING,
    decoded,
    job_key,
    session_key,
    sync_client,
    webhook_key,
    worker_key,
)

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

# Renew a worker job's hold (KEYS: the holds; ARGV owner, ttl ms): unless another owner
# has claimed it since.
_HOLD = """
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if not holder or holder == ARGV[1] then redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
end
return 1
"""

# Claim running worker jobs whose hold ran out (KEYS open jobs; ARGV owner, ttl ms).
_CLAIM_LOST = """
local claimed = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local job = 'tp:j:' .. id
  if redis.call('HGET', job, 'via') == 'worker' and redis.call('HGET', job, 'status') == 'running'
      and redis.call('SET', job .. ':worker', ARGV[1], 'NX', 'PX', ARGV[2]) then
    table.insert(claimed, id)
  end
end
return claimed
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
        self._hold = self.redis.register_script(_HOLD)
        self._claim_lost = self.redis.register_script(_CLAIM_LOST)

    def close(self) -> None:
        self.redis.close()

    # sessions

    def save_session(self, session_id: str, token_hash: str, history: list[dict[str, Any]],
                     head_seq: int, breakers: dict[str, Any] | None = None) -> None:
        """Write a session's history and breakers, and its token hash unless one is stored
        (a token changed in Redis stays changed whoever saves the session next)."""
        key = session_key(session_id)
        fields: dict[Any, Any] = {"history": json.dumps(history, default=str)}
        if breakers is not None:
            fields["breakers"] = json.dumps(breakers)
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, "token_hash", token_hash)
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
        row: dict[Any, Any] = {**job, "args": json.dumps(job["args"], default=str),
                               "delivered": "0"}
        pipe = self.redis.pipeline()
        pipe.hset(job_key(job['id']), mapping=row)
        pipe.sadd(session_key(job["session_id"], "jobs"), job["id"])
        pipe.sadd(OPEN_JOBS, job["id"])
        pipe.execute()

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job row, JSON fields decoded."""
        row: dict[str, str] = decoded(self.redis.hgetall(job_key(job_id)))
        return _decode(row) if row else None

    def _rows(self, ids: list[str]) -> list[dict[str, Any]]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(job_key(job_id))
        return [_decode(row) for row in pipe.execute() if row]

    def jobs(self, *, session_id: str | None = None, open_only: bool = False,
             undelivered: bool = False) -> list[dict[str, Any]]:
        """Jobs matching the filters, oldest first."""
        ids: set[str] = decoded(self.redis.smembers(
            session_key(session_id, "jobs") if session_id is not None else OPEN_JOBS))
        rows = self._rows(list(ids))
        if open_only:
            rows = [r for r in rows if r["status"] in OPEN]
        if undelivered:
            rows = [r for r in rows if r["status"] not in OPEN and not r["delivered"]]
        return sorted(rows, key=lambda r: r["created"])

    def progress(self, job_id: str, progress: float, total: float | None,
                 message: str | None) -> None:
        fields: dict[Any, Any] = {"progress": progress}
        fields.update({k: v for k, v in (("total", total), ("message", message))
                       if v is not None})
        self.redis.hset(job_key(job_id), mapping=fields)

    def finish(self, job_id: str, status: str, output: Any = None,
               error: dict[str, Any] | None = None) -> bool:
        """End an open job, atomically: False when it had already ended (on any process)."""
        fields: list[Any] = [job_id, "status", status, "completed", time.time()]
        if output is not None:
            fields += ["output", json.dumps(output, default=str)]
        if error is not None:
            fields += ["error", json.dumps(error)]
        return bool(self._finish(keys=[job_key(job_id), OPEN_JOBS, WAITING], args=fields))

    def mark_delivered(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.redis.hset(job_key(job_id), "delivered", "1")

    def hold_workers(self, owner: str, job_ids: list[str], ttl: float) -> None:
        if job_ids:
            self._hold(keys=[worker_key(job_id) for job_id in job_ids],
                       args=[owner, int(ttl * 1000)])

    def claim_lost_workers(self, owner: str, ttl: float) -> list[dict[str, Any]]:
        ids = self._claim_lost(keys=[OPEN_JOBS], args=[owner, int(ttl * 1000)])
        return self._rows(list(ids))

    def deliver_on_start(self, session_id: str, job_ids: list[str]) -> None:
        # Turns on Redis take their completions with the run lease (take_undelivered).
        self.mark_delivered(job_ids)

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
        return bool(self.redis.set(webhook_key(webhook_id), job_id, nx=True, ex=7 * 24 * 3600))

    def forget_webhook(self, webhook_id: str) -> None:
        """Un-see ``webhook_id``: its delivery was not applied, and a retry must be."""
        self.redis.delete(webhook_key(webhook_id))


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

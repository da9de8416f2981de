"""The Redis backend's run leases: which process executes each session's run.

A run executes on exactly one process, the one holding the session's run lease
(``tp:s:{id}:run``, a TTL key it renews). The lease is also the cluster-wide "one
run at a time per session". Its value, ``{run, owner, start}``, is what the log's
appends are fenced on (:mod:`.log`). ``tp:runs`` lists every lease taken, so that any
process can find the runs whose lease expired (their process died) and claim them.

A run whose process died leaves its ``tp:runs`` entry behind its expired lease key: it
is an orphan, and nothing may start on the session before it has ended. Taking a lease
then yields the :class:`Orphan` instead (its caller hands it to a sweeper), and a
claim puts a sweeper's lease in place, so the session stays taken while the sweeper
writes the dead run's terminal events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from .keys import RUNS, decoded, lease_key, session_key

# KEYS lease, runs; ARGV lease, ttl ms, session id. 1: taken; 0: held; a string: the
# orphan's lease (its key expired, its tp:runs entry is still there: nobody ended it).
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local orphan = redis.call('HGET', KEYS[2], ARGV[3])
if orphan then return orphan end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# A lease that is no longer ours stays listed in tp:runs: the run lost it, so its own
# terminal event was refused, and the sweeper that claims the entry writes one.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""
# KEYS lease, runs; ARGV session id, the orphan's lease, the sweeper's lease, ttl ms.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Orphan:
    """The lease of a run whose process died before giving it back.

    The run has no terminal event yet (or its sweeper died too): it must be ended
    before another run of the session starts.
    """

    session_id: str
    lease: str

    @property
    def value(self) -> dict[str, Any]:
        """``{run, owner, start}``, and ``lost`` (the dead owner) once a sweeper took it."""
        found: dict[str, Any] = json.loads(self.lease)
        return found


class Leases:
    """This process's view of the run leases.

    Args:
        client: A synchronous client (fails fast while Redis is down).
        process: This process's id, written into the leases it takes.
        ttl: Seconds a lease lasts without renewal.
    """

    def __init__(self, client: redis.Redis, process: str, ttl: float) -> None:
        self.redis = client
        self.process = process
        self.ttl = ttl
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._claim = client.register_script(_CLAIM)

    async def owner(self, client: redis.asyncio.Redis, session_id: str) -> dict[str, Any] | None:
        """The session's run lease: ``{run, owner, start}``, or None when no run is going
        (asked through ``client``, an asyncio one: requests ask it on the event loop)."""
        value = await client.get(lease_key(session_id))
        return json.loads(value) if value else None

    def take(self, session_id: str, run_id: str) -> str | Orphan | None:
        """Take the session's lease for ``run_id``: its value; None when it is held; the
        :class:`Orphan` when a dead process's run must be ended first."""
        start = int(self.redis.get(session_key(session_id, "seq")) or 0)
        lease = json.dumps({"run": run_id, "owner": self.process, "start": start})
        taken = self._acquire(keys=[lease_key(session_id), RUNS],
                              args=[lease, int(self.ttl * 1000), session_id])
        if isinstance(taken, str):
            return Orphan(session_id, taken)
        return lease if taken else None

    def renew_all(self, owned: dict[str, str]) -> set[str]:
        """Extend every lease in ``owned`` (session id -> lease) in one round trip: the
        session ids whose lease is no longer theirs (lost). One pipeline, so a process
        with hundreds of runs renews them all well within a TTL on a loaded machine."""
        if not owned:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        ttl = int(self.ttl * 1000)
        for session_id, lease in owned.items():
            self._renew(keys=[lease_key(session_id)], args=[lease, ttl], client=pipe)
        kept = pipe.execute()
        return {session_id for session_id, ok in zip(owned, kept, strict=True) if not ok}

    def give_back(self, session_id: str, lease: str) -> None:
        """Release the session's run lease if it is still ``lease`` (a lost one is left
        listed for the sweeper)."""
        self._release(keys=[lease_key(session_id), RUNS], args=[lease, session_id])

    def taken(self) -> dict[str, str]:
        """Every lease taken and not given back, by session id (on any process)."""
        found: dict[str, str] = decoded(self.redis.hgetall(RUNS))
        return found

    def orphans(self) -> list[Orphan]:
        """The leases in ``tp:runs`` whose key expired (their process died)."""
        taken = self.taken()
        if not taken:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for session_id in taken:
            pipe.exists(lease_key(session_id))
        return [Orphan(session_id, lease)
                for (session_id, lease), alive in zip(taken.items(), pipe.execute(), strict=True)
                if not alive]

    def claim(self, orphan: Orphan) -> str | None:
        """Take over an orphan's session for sweeping it: the sweeper's lease (give it
        back once the run is ended), or None when another process claimed it first."""
        value = orphan.value
        sweep = json.dumps({"run": value["run"], "owner": self.process,
                            "start": value["start"], "lost": value.get("lost", value["owner"])})
        claimed = self._claim(keys=[lease_key(orphan.session_id), RUNS],
                              args=[orphan.session_id, orphan.lease, sweep,
                                    int(self.ttl * 1000)])
        return sweep if claimed else None

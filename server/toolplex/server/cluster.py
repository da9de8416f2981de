"""Several server processes on one Redis: run ownership, commands, job turns.

A run executes on exactly one process, the one holding the session's run lease
(``tp:s:{id}:run``, a TTL key it renews). The lease is also the cluster-wide "one
run at a time per session". Its value, ``{run, owner, start}``, is fenced into the
run's appends (see :mod:`toolplex.shared`): once it is gone, the run's events are
refused, so an owner declared lost cannot append after the fact. Every process
sweeps ``tp:runs`` for runs whose lease expired (their process died) and ends them
with ``run.error`` ``owner_lost``, giving each still-open call a ``tool.error`` of
the same code: one terminal event each, as PROTOCOL.md asks. Commands for a run
owned elsewhere travel on the ``tp:cmd`` channel to its owner.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import anyio

from ..events import TERMINAL_CALL_TYPES, TERMINAL_RUN_TYPES, RunError, ToolFailed, error_dict
from ..exceptions import ProtocolError
from ..jobs import completion_message
from ..runner import Run
from ..session import Session, new_id
from ..shared import (
    UNREACHABLE,
    WAITING,
    RedisStore,
    SharedLog,
    SharedLogs,
    async_client,
    entry_seq,
    session_key,
)

if TYPE_CHECKING:
    from .hub import Hub

logger = logging.getLogger("toolplex.server.cluster")

RUNS = "tp:runs"
COMMANDS = "tp:cmd"

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
  return 1
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def unavailable() -> ProtocolError:
    """The error a request gets while Redis is unreachable (HTTP 503)."""
    return ProtocolError("store_unavailable",
                         "the session store (Redis) is unreachable; try again shortly")


class Cluster:
    """This process's part in a Redis-backed deployment.

    Args:
        hub: The server state it serves.
        url: ``redis://...``.
        lease_ttl: Seconds a run's lease lasts without renewal (renewed every third of it):
            how long a dead process's run stays open before another ends it.
    """

    def __init__(self, hub: Hub, url: str, *, lease_ttl: float = 10.0) -> None:
        self.hub = hub
        self.process = new_id("p")
        self.lease_ttl = lease_ttl
        settings = hub.settings
        self.store = RedisStore(url, session_ttl=max(settings.session_idle_ttl, 24 * 3600.0))
        self.logs = SharedLogs(url, self.process, retain=settings.log_retain)
        self.logs.on_unreachable.append(self._store_down)
        self.redis = self.store.redis
        self.url = url
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._claim = self.redis.register_script(_CLAIM)
        self.owned: dict[str, tuple[Run, str]] = {}
        """Runs this process executes, by session id, with their lease."""
        self.closing = False
        """Set at shutdown: no new job turn starts here (another process delivers it)."""

    # -- sessions -------------------------------------------------------------------

    def load(self, session_id: str) -> Session | None:
        """A session another process created (or this one forgot), from Redis."""
        row = self.store.session(session_id)
        if row is None:
            return None
        session = Session(id=session_id, token=None, token_hash=row["token_hash"],
                          retain=self.hub.settings.log_retain, history=row["history"])
        self._restore_breakers(session, row["breakers"])
        session.log = self.logs.log_for(session_id, session.retain)
        return session

    def conversation(self, kind: str, key: str, session_id: str | None = None) -> str | None:
        """The session an adapter's conversation id stands for; with ``session_id``, store
        it unless another process stored one first (that one is returned)."""
        field = f"{kind}:{key}"
        if session_id is not None and self.redis.hsetnx("tp:conversations", field, session_id):
            return session_id
        return self.redis.hget("tp:conversations", field)  # type: ignore[no-any-return]

    def refresh(self, session: Session) -> None:
        """Take the stored history and breakers (the last run may have run elsewhere)."""
        row = self.store.session(session.id)
        if row is not None:
            session.history = row["history"]
            self._restore_breakers(session, row["breakers"])

    def save(self, session: Session) -> None:
        """Store the session's token hash, history and breakers."""
        breakers = {name: b.snapshot() for name, b in session.breakers.items()}
        self.store.save_session(session.id, session.token_hash, session.history,
                                session.log.head_seq, breakers)

    def _restore_breakers(self, session: Session, saved: dict[str, Any]) -> None:
        for name, snapshot in saved.items():
            tool = self.hub.agent.tools.get(name)
            if tool is not None:
                self.hub.agent.executor.breaker_for(session, tool).restore(snapshot)

    # -- runs -----------------------------------------------------------------------

    def owner(self, session_id: str) -> dict[str, Any] | None:
        """The session's run lease: ``{run, owner, start}``, or None when no run is going."""
        value = self.redis.get(session_key(session_id, "run"))
        return json.loads(value) if value else None

    def start(self, run: Run) -> None:
        """Execute ``run`` here if its session's lease is free.

        Raises:
            ProtocolError: ``run_active`` (a run of the session is going on some process),
                ``store_unavailable``.
        """
        session = run.session
        try:
            lease = self._take_lease(run)
            if lease is None:
                owner = self.owner(session.id)
                active = owner["run"] if owner else "another run"
                raise ProtocolError("run_active",
                                    f"run {active} is still going; cancel it first")
            self.refresh(session)
        except UNREACHABLE:
            session.runs.pop(run.id, None)
            raise unavailable() from None
        except ProtocolError:
            session.runs.pop(run.id, None)
            raise
        self._launch(run, lease)

    def _take_lease(self, run: Run) -> str | None:
        session_id = run.session.id
        start = int(self.redis.get(session_key(session_id, "seq")) or 0)
        lease = json.dumps({"run": run.id, "owner": self.process, "start": start})
        taken = self._acquire(keys=[session_key(session_id, "run"), RUNS],
                              args=[lease, int(self.lease_ttl * 1000), session_id])
        return lease if taken else None

    def _give_back(self, session_id: str, lease: str) -> None:
        """Release the session's run lease if it is still ``lease``."""
        self._release(keys=[session_key(session_id, "run"), RUNS], args=[lease, session_id])

    def _launch(self, run: Run, lease: str) -> None:
        session = run.session
        assert isinstance(session.log, SharedLog)
        session.log.fence = (run.id, lease)
        self.owned[session.id] = (run, lease)
        self.hub.task_group.start_soon(self._execute, run, lease)

    async def _execute(self, run: Run, lease: str) -> None:
        session = run.session
        try:
            await run.execute()
        finally:
            with anyio.CancelScope(shield=True):
                # The terminal event must be in Redis before the lease goes: the next run
                # (on any process) starts from what this one stored.
                await self.logs.flush(self.lease_ttl)
                if self.owned.get(session.id, (None,))[0] is run:
                    del self.owned[session.id]
                log = session.log
                if isinstance(log, SharedLog) and log.fence is not None and log.fence[0] == run.id:
                    log.fence = None
                try:
                    self._give_back(session.id, lease)
                except UNREACHABLE:
                    pass  # it expires; the sweeper finds the run ended
        self.pump(session)

    def pump(self, session: Session) -> None:
        """Start the session's job turn now if completions wait for it and its run lease
        is free (whichever process takes the lease first delivers them; the run that
        holds it pumps again as it ends)."""
        try:
            if self.closing or session.runs or not self.store.has_undelivered(session.id):
                return
        except UNREACHABLE:
            return  # the completions stay undelivered; the next pump delivers them
        run = Run(self.hub.agent, session, [], "job")
        try:
            lease = self._take_lease(run)
            rows = self.store.take_undelivered(session.id) if lease else []
            if rows:
                self.refresh(session)
            elif lease:
                self._give_back(session.id, lease)
        except UNREACHABLE:
            rows = []  # the completions stay undelivered; the next pump delivers them
        if not rows:
            session.runs.pop(run.id, None)
            return
        run.input = [completion_message(row) for row in rows]
        self._launch(run, lease)  # type: ignore[arg-type]

    def _store_down(self) -> None:
        """Redis stopped answering: fail this process's runs clearly rather than let
        them go on writing into an outbox nobody reads."""
        for run, _ in list(self.owned.values()):
            run.fail(error_dict("store_unavailable",
                                "the session store (Redis) became unreachable; the run stopped"))

    async def _keep_leases(self) -> None:
        while True:
            await anyio.sleep(self.lease_ttl / 3)
            for session_id, (run, lease) in list(self.owned.items()):
                try:
                    kept = self._renew(keys=[session_key(session_id, "run")],
                                       args=[lease, int(self.lease_ttl * 1000)])
                except UNREACHABLE:
                    break  # the writer declares an outage; the lease outlasts a blip
                if not kept:
                    logger.error("run lost its lease", extra={"session_id": session_id,
                                                              "run_id": run.id})
                    run.fail(error_dict("owner_lost", "this process lost the run's lease"))

    async def _sweep(self) -> None:
        while True:
            await anyio.sleep(self.lease_ttl / 2)
            try:
                runs = self.redis.hgetall(RUNS)
                for session_id, lease in runs.items():
                    if self._claim(keys=[session_key(session_id, "run"), RUNS],
                                   args=[session_id, lease]):
                        await self._end_lost(session_id, json.loads(lease))
                # Completions nobody delivered (their process stopped before it could):
                # any process with a free lease starts the turn.
                for session_id in self.store.waiting():
                    session = self.hub.store.get(session_id)
                    if session is not None:
                        self.pump(session)
                    else:  # the session expired: nobody left to tell
                        self.redis.srem(WAITING, session_id)
            except UNREACHABLE:
                continue

    async def _end_lost(self, session_id: str, lease: dict[str, Any]) -> None:
        """End a run whose owner died: one terminal event for it and each open call."""
        session = self.hub.store.get(session_id)
        if session is None:
            return
        run_id = lease["run"]
        entries = self.redis.xrange(session_key(session_id, "log"), min=f"{lease['start'] + 1}-0")
        open_calls: dict[str, None] = {}
        first = entry_seq(entries[0][0]) if entries else None
        # When the start fell out of the retained stream, it did start (long ago).
        started = first is not None and first > lease["start"] + 1
        ended = False
        for _, fields in entries:
            event = json.loads(fields["e"])
            if event.get("run_id") != run_id:
                continue
            if event["type"] == "run.started":
                started = True
            elif event["type"] == "tool.call.start":
                open_calls[event["call_id"]] = None
            elif event["type"] in TERMINAL_CALL_TYPES:
                open_calls.pop(event["call_id"], None)
            elif event["type"] in TERMINAL_RUN_TYPES:
                ended = True
        if started and not ended:  # (a lease taken for a run that never began: nothing)
            message = f"the process running it ({lease['owner']}) stopped"
            for call_id in open_calls:
                session.log.append(ToolFailed(run_id=run_id, call_id=call_id,
                                              error=error_dict("owner_lost", message)))
            session.log.append(RunError(run_id=run_id, error=error_dict("owner_lost", message)))
            await self.logs.flush(self.lease_ttl)
            logger.warning("run %s ended: its owner %s was lost", run_id, lease["owner"],
                           extra={"session_id": session_id, "run_id": run_id})
        self.pump(session)

    # -- commands -------------------------------------------------------------------

    def cancel_run(self, session: Session, run_id: str) -> None:
        """Ask the process owning ``run_id`` to cancel it.

        Raises:
            ProtocolError: ``unknown_run``, ``store_unavailable``.
        """
        try:
            owner = self.owner(session.id)
            if owner is None or owner["run"] != run_id:
                raise ProtocolError("unknown_run", f"no active run {run_id!r} in this session")
            self.redis.publish(COMMANDS, json.dumps(
                {"session_id": session.id, "type": "run.cancel", "run_id": run_id}))
        except UNREACHABLE:
            raise unavailable() from None

    def cancel_call(self, session: Session, call_id: str) -> None:
        """Ask the process running the session's run to cancel ``call_id``.

        Raises:
            ProtocolError: ``unknown_call`` (no run of the session going elsewhere).
        """
        try:
            owner = self.owner(session.id)
            if owner is None or owner["owner"] == self.process:
                raise ProtocolError("unknown_call",
                                    f"no running call {call_id!r} in this session")
            self.redis.publish(COMMANDS, json.dumps(
                {"session_id": session.id, "type": "tool.cancel", "call_id": call_id}))
        except UNREACHABLE:
            raise unavailable() from None

    def _on_command(self, command: dict[str, Any]) -> None:
        entry = self.owned.get(command.get("session_id", ""))
        if entry is None:
            return
        run = entry[0]
        if command["type"] == "run.cancel" and command.get("run_id") == run.id:
            run.cancel()
        elif command["type"] == "tool.cancel":
            call = run.session.calls.get(command.get("call_id", ""))
            if call is not None:
                call.cancel("user")

    async def _listen(self) -> None:
        client = async_client(self.url, timeout=None)
        try:
            while True:
                try:
                    async with client.pubsub() as pubsub:
                        await pubsub.subscribe(COMMANDS)
                        async for message in pubsub.listen():
                            if message["type"] == "message":
                                self._on_command(json.loads(message["data"]))
                except UNREACHABLE:
                    await anyio.sleep(0.5)
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    # -- life -----------------------------------------------------------------------

    def healthy(self) -> bool:
        """Redis answers and the last write went through."""
        return self.logs.ping()

    async def serve(self) -> None:
        """The writer, tailer, lease keeper, sweeper and command listener, until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.logs.serve)
            tg.start_soon(self._keep_leases)
            tg.start_soon(self._sweep)
            tg.start_soon(self._listen)

    async def shutdown(self) -> None:
        """Write what is still queued (runs have ended by now)."""
        await self.logs.flush(2.0)


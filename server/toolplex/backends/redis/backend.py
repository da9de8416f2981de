"""The Redis backend: any number of server processes share sessions, logs and jobs.

A run executes on the process holding its session's run lease (:mod:`.lease`); its
events are fenced on it (:mod:`.log`), so an owner declared lost cannot append after
the fact. Every process sweeps the leases for runs whose lease expired (their process
died) and ends them with ``run.error`` ``owner_lost``, giving each still-open call a
``tool.error`` of the same code: one terminal event each, as PROTOCOL.md asks.
Commands for a run owned elsewhere travel on the ``tp:cmd`` channel to its owner; a
job's completion starts its turn on whichever process takes the session's lease first.

No request and no stream waits on Redis on the event loop: simple commands go through
redis-py's asyncio client, the Lua scripts and pipelines already written for the
synchronous client run in a worker thread. A stalled Redis fails those requests (503
``store_unavailable`` in its socket timeout) and freezes nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import redis
import redis.asyncio
from anyio.abc import TaskGroup

from ...events import TERMINAL_CALL_TYPES, TERMINAL_RUN_TYPES, RunError, ToolFailed, error_dict
from ...exceptions import ProtocolError
from ...jobs import JobStore, completion_message
from ...log import EventLog
from ...runner import Agent, Run
from ...session import Session, new_id
from .. import unavailable
from .keys import (
    COMMANDS,
    CONVERSATIONS,
    UNREACHABLE,
    WAITING,
    async_client,
    decoded,
    entries,
    session_key,
)
from .lease import Leases, Orphan
from .log import SharedLog, SharedLogs, entry_seq
from .store import RedisStore

logger = logging.getLogger("toolplex.backends.redis")


class RedisBackend:
    """This process's part in a Redis-backed deployment.

    Args:
        url: ``redis://...``.
        retain: Events each session's stream and local window keep.
        session_ttl: Seconds a stored session outlives its last save.
        lease_ttl: Seconds a run's lease lasts without renewal (renewed every third of it):
            how long a dead process's run stays open before another ends it.
    """

    unreachable: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)

    def __init__(self, url: str, *, retain: int = 10_000, session_ttl: float = 24 * 3600.0,
                 lease_ttl: float = 10.0) -> None:
        self.url = url
        self.process = new_id("p")
        self.lease_ttl = lease_ttl
        self.store = RedisStore(url, session_ttl=session_ttl)
        self.jobs: JobStore = self.store
        self.logs = SharedLogs(url, self.process, retain=retain)
        self.logs.on_unreachable.append(self._store_down)
        self.redis = self.store.redis
        self.leases = Leases(self.redis, self.process, lease_ttl)
        self.aio = async_client(url)
        """For the background work that must not block the event loop."""
        self.owned: dict[str, tuple[Run, str]] = {}
        """Runs this process executes, by session id, with their lease."""
        self._closing = False
        self._agent: Agent | None = None
        self._sessions: Callable[[str], Session | None] = lambda _: None
        self._runs: TaskGroup | None = None
        self._sweeping: set[str] = set()
        """Sessions whose orphaned run this process is ending."""

    @property
    def agent(self) -> Agent:
        assert self._agent is not None, "RedisBackend.bind(agent, ...) first"
        return self._agent

    def bind(self, agent: Agent, sessions: Callable[[str], Session | None]) -> None:
        self._agent = agent
        self._sessions = sessions
        agent.jobs.use(self.store, sessions=sessions, deliver=self.pump, deliver_now=self.pump_now)
        agent.jobs.worker_ttl = self.lease_ttl  # a dead process's job, like its run

    # -- sessions -------------------------------------------------------------------

    async def log_for(self, session_id: str, retain: int) -> EventLog:
        try:
            return await self.logs.follow(session_id, retain)
        except UNREACHABLE:
            raise unavailable() from None

    def restore(self, retain: int) -> list[Session]:
        return []  # sessions load on demand from Redis

    def load(self, session_id: str, retain: int) -> Session | None:
        """A session another process created (or this one forgot), from Redis."""
        session = self._session(session_id, retain, self.store.session(session_id))
        if session is not None:
            session.log = self.logs.log_for(session_id, session.retain)
        return session

    async def fetch(self, session_id: str, retain: int) -> Session | None:
        """:meth:`load` from worker threads (while Redis is down its error reaches the
        app's handler: 503 ``store_unavailable``)."""
        row = await anyio.to_thread.run_sync(self.store.session, session_id)
        session = self._session(session_id, retain, row)
        if session is not None:
            session.log = await self.logs.follow(session_id, session.retain)
        return session

    def _session(self, session_id: str, retain: int,
                 row: dict[str, Any] | None) -> Session | None:
        if row is None:
            return None
        session = Session(id=session_id, token=None, token_hash=row["token_hash"],
                          retain=retain, history=row["history"])
        self._restore_breakers(session, row["breakers"])
        return session

    async def token_hash(self, session: Session) -> str | None:
        """Read through: another process may have changed or revoked the token (while
        Redis is down its error reaches the app's handler: 503 ``store_unavailable``)."""
        found: str | None = decoded(await self.aio.hget(session_key(session.id), "token_hash"))
        return found

    def forget(self, session_id: str) -> None:
        self.logs.forget(session_id)

    async def conversation(self, kind: str, key: str,
                           session_id: str | None = None) -> str | None:
        field = f"{kind}:{key}"
        if session_id is not None and await self.aio.hsetnx(CONVERSATIONS, field, session_id):
            return session_id
        found: str | None = decoded(await self.aio.hget(CONVERSATIONS, field))
        return found

    async def refresh(self, session: Session) -> None:
        """Take the stored history and breakers (the last run may have run elsewhere)."""
        row = await anyio.to_thread.run_sync(self.store.session, session.id)
        if row is not None:
            session.history = row["history"]
            self._restore_breakers(session, row["breakers"])

    def save(self, session: Session) -> None:
        """Store the session's token hash, history and breakers."""
        owned = self.owned.get(session.id)
        if owned is not None and owned[0].finished.is_set():
            return  # its run's end: saved from a worker thread before the lease goes
        self._save(session)

    async def created(self, session: Session) -> None:
        """Store a new session (from a worker thread)."""
        await anyio.to_thread.run_sync(self._save, session)

    def _save(self, session: Session) -> None:
        breakers = {name: b.snapshot() for name, b in session.breakers.items()}
        try:
            self.store.save_session(session.id, session.token_hash, session.history,
                                    session.log.head_seq, breakers)
        except UNREACHABLE:
            raise unavailable() from None

    def _restore_breakers(self, session: Session, saved: dict[str, Any]) -> None:
        for name, snapshot in saved.items():
            tool = self.agent.tools.get(name)
            if tool is not None:
                self.agent.executor.breaker_for(session, tool).restore(snapshot)

    # -- runs -----------------------------------------------------------------------

    async def start(self, run: Run) -> None:
        """Execute ``run`` here if its session's lease is free.

        Raises:
            ProtocolError: ``run_active`` (a run of the session is going on some process),
                ``store_unavailable``.
        """
        session = run.session
        lease: str | Orphan | None = None
        # Shielded: every step ends in Redis's socket timeout, and a request cancelled
        # half-way would leave the run in session.runs with its lease taken.
        with anyio.CancelScope(shield=True):
            try:
                lease = await anyio.to_thread.run_sync(self.leases.take, session.id, run.id)
                if isinstance(lease, Orphan):
                    self._sweep_soon(lease)
                    raise ProtocolError("run_active", "the session's last run stopped with "
                                        "its process and is being ended; try again shortly")
                if lease is None:
                    owner = await self.leases.owner(self.aio, session.id)
                    active = owner["run"] if owner else "another run"
                    raise ProtocolError("run_active",
                                        f"run {active} is still going; cancel it first")
                await self.refresh(session)
            except UNREACHABLE:
                session.runs.pop(run.id, None)
                await self._give_back(session.id, lease)  # (a 503 must not hold it a TTL)
                raise unavailable() from None
            except ProtocolError:
                session.runs.pop(run.id, None)
                raise
            self._launch(run, lease)

    async def _give_back(self, session_id: str, lease: str | Orphan | None) -> None:
        if isinstance(lease, str):
            try:
                await anyio.to_thread.run_sync(self.leases.give_back, session_id, lease)
            except UNREACHABLE:
                pass  # it expires; a sweeper finds the run ended (or ends it)

    def _launch(self, run: Run, lease: str) -> None:
        if self._runs is None:
            raise RuntimeError("the app is not running: serve it with its lifespan")
        session = run.session
        assert isinstance(session.log, SharedLog)
        session.log.fence = (run.id, lease)
        self.owned[session.id] = (run, lease)
        self._runs.start_soon(self._execute, run, lease)

    async def _execute(self, run: Run, lease: str) -> None:
        session = run.session
        try:
            await run.execute()
        finally:
            with anyio.CancelScope(shield=True):
                # History before the lease goes: the next run, on any process, reads it.
                # From a worker thread: a stalled Redis must not freeze the event loop.
                try:
                    await anyio.to_thread.run_sync(self._save, session)
                except ProtocolError as exc:
                    logger.error("session not saved: %s", exc.message,
                                 extra={"session_id": session.id})
                # The terminal event must be in Redis before the lease goes: the next run
                # (on any process) starts from what this one stored.
                await self.logs.flush(self.lease_ttl)
                if self.owned.get(session.id, (None,))[0] is run:
                    del self.owned[session.id]
                log = session.log
                if isinstance(log, SharedLog) and log.fence is not None and log.fence[0] == run.id:
                    log.fence = None
                await self._give_back(session.id, lease)
        await self.pump_now(session)

    def pump(self, session: Session) -> None:
        """Start the session's job turn soon if completions wait for it and its run lease
        is free (whichever process takes the lease first delivers them; a run this
        process owns pumps again as it ends). Redis is asked from a task of its own."""
        if self._runs is not None and not (self._closing or session.runs
                                           or session.id in self.owned):
            self._runs.start_soon(self.pump_now, session)

    async def pump_now(self, session: Session) -> None:
        """:meth:`pump`, returning once the turn has started (or nothing waits for one)."""
        if self._closing or session.runs:
            return
        try:
            waiting = await anyio.to_thread.run_sync(self.store.has_undelivered, session.id)
        except UNREACHABLE:
            return  # the completions stay undelivered; the next pump delivers them
        if not waiting or self._closing or session.runs:
            return
        run = Run(self.agent, session, [], "job")
        lease: str | Orphan | None = None
        rows: list[dict[str, Any]] = []
        # Shielded, as in start: the run is in session.runs until it launches or goes.
        with anyio.CancelScope(shield=True):
            try:
                lease = await anyio.to_thread.run_sync(self.leases.take, session.id, run.id)
                if isinstance(lease, str):
                    # History first: a refresh that fails leaves the completions undelivered.
                    await self.refresh(session)
                    rows = await anyio.to_thread.run_sync(self.store.take_undelivered,
                                                          session.id)
            except UNREACHABLE:
                rows = []  # the completions stay undelivered; the next pump delivers them
            if isinstance(lease, Orphan):
                self._sweep_soon(lease)  # (its sweeper pumps once the dead run has ended)
            if not rows or not isinstance(lease, str):
                await self._give_back(session.id, lease)
                session.runs.pop(run.id, None)
                return
            run.input = [completion_message(row) for row in rows]
            self._launch(run, lease)

    def _store_down(self) -> None:
        """Redis stopped answering: fail this process's runs clearly rather than let
        them go on writing into an outbox nobody reads."""
        for run, _ in list(self.owned.values()):
            run.fail(error_dict("store_unavailable",
                                "the session store (Redis) became unreachable; the run stopped"))

    async def _keep_leases(self) -> None:
        # Off the event loop (a worker thread): a stalled Redis must not freeze the
        # process's streams and its other routes while a renewal waits for its timeout.
        # All of them in one round trip: one worker-thread hop per run took a TTL and
        # more with 200 runs on a loaded machine, and other processes swept live runs.
        while True:
            await anyio.sleep(self.lease_ttl / 3)
            owned = dict(self.owned)
            try:
                lost = await anyio.to_thread.run_sync(
                    self.leases.renew_all, {sid: lease for sid, (_, lease) in owned.items()})
            except UNREACHABLE:
                lost = set()  # the writer declares an outage; the lease outlasts a blip
            for session_id in lost:
                if self.owned.get(session_id) != owned[session_id]:
                    continue  # it ended and gave the lease back meanwhile
                run = owned[session_id][0]
                logger.error("run lost its lease", extra={"session_id": session_id,
                                                          "run_id": run.id})
                run.fail(error_dict("owner_lost", "this process lost the run's lease"))
            try:
                await self._stored_commands(self.aio)
            except UNREACHABLE:
                pass

    async def _sweep(self) -> None:
        while True:
            await anyio.sleep(self.lease_ttl / 2)
            try:
                for orphan in await anyio.to_thread.run_sync(self.leases.orphans):
                    await self._sweep_orphan(orphan)
                # Completions nobody delivered (their process stopped before it could):
                # any process with a free lease starts the turn.
                for session_id in await anyio.to_thread.run_sync(self.store.waiting):
                    session = self._sessions(session_id)
                    if session is not None:
                        await self.pump_now(session)
                    else:  # the session expired: nobody left to tell
                        await self.aio.srem(WAITING, session_id)
            except UNREACHABLE:
                continue

    def _sweep_soon(self, orphan: Orphan) -> None:
        """End an orphan found while taking a lease now, not at the next sweep."""
        if self._runs is not None and orphan.session_id not in self._sweeping:
            self._runs.start_soon(self._sweep_orphan, orphan)

    async def _sweep_orphan(self, orphan: Orphan) -> None:
        """Claim an orphan (one process wins) and end its run under the sweeper's lease:
        the session takes no other run before the dead one's terminal events are stored."""
        if orphan.session_id in self._sweeping:
            return
        self._sweeping.add(orphan.session_id)
        try:
            sweep = await anyio.to_thread.run_sync(self.leases.claim, orphan)
            if sweep is None:
                return
            try:
                await self._end_lost(orphan.session_id, orphan.value)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._give_back(orphan.session_id, sweep)
            session = self._sessions(orphan.session_id)
            if session is not None:
                await self.pump_now(session)
        except UNREACHABLE:
            pass  # the next sweep tries again
        finally:
            self._sweeping.discard(orphan.session_id)

    async def _end_lost(self, session_id: str, lease: dict[str, Any]) -> None:
        """End a run whose owner died: one terminal event for it and each open call."""
        session = self._sessions(session_id)
        if session is None:
            return
        run_id = lease["run"]
        stored = entries(await anyio.to_thread.run_sync(
            lambda: self.redis.xrange(session_key(session_id, "log"),
                                      min=f"{lease['start'] + 1}-0")))
        open_calls: dict[str, None] = {}
        first = entry_seq(stored[0][0]) if stored else None
        # When the start fell out of the retained stream, it did start (long ago).
        started = first is not None and first > lease["start"] + 1
        ended = False
        for _, fields in stored:
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
            message = f"the process running it ({lease.get('lost', lease['owner'])}) stopped"
            log = session.log
            assert isinstance(log, SharedLog)
            # Unfenced: when the run was this process's own, its fence still names the
            # lease just claimed, and would refuse the very events that end the run.
            for call_id in open_calls:
                log.append(ToolFailed(run_id=run_id, call_id=call_id,
                                      error=error_dict("owner_lost", message)), fenced=False)
            log.append(RunError(run_id=run_id, error=error_dict("owner_lost", message)),
                       fenced=False)
            await self.logs.flush(self.lease_ttl)
            logger.warning("run %s ended: its owner %s was lost", run_id,
                           lease.get("lost", lease["owner"]),
                           extra={"session_id": session_id, "run_id": run_id})

    # -- commands -------------------------------------------------------------------

    async def cancel_run(self, session: Session, run_id: str) -> None:
        """Ask the process owning ``run_id`` to cancel it.

        Raises:
            ProtocolError: ``unknown_run``, ``store_unavailable``.
        """
        try:
            owner = await self.leases.owner(self.aio, session.id)
            if owner is None or owner["run"] != run_id:
                raise ProtocolError("unknown_run", f"no active run {run_id!r} in this session")
            await self._send(session.id, {"type": "run.cancel", "run_id": run_id})
        except UNREACHABLE:
            raise unavailable() from None

    async def cancel_call(self, session: Session, call_id: str) -> None:
        """Ask the process running the session's run to cancel ``call_id``.

        Raises:
            ProtocolError: ``unknown_call`` (no run of the session going elsewhere).
        """
        try:
            owner = await self.leases.owner(self.aio, session.id)
            if owner is None or owner["owner"] == self.process:
                raise ProtocolError("unknown_call",
                                    f"no running call {call_id!r} in this session")
            await self._send(session.id, {"type": "tool.cancel", "call_id": call_id})
        except UNREACHABLE:
            raise unavailable() from None

    async def _send(self, session_id: str, command: dict[str, Any]) -> None:
        """Store a command for the session's run, then tell its owner.

        A published message reaches only the processes subscribed at that moment (an
        owner re-subscribing after a Redis restart misses it): the stored copy is what
        the owner acts on, read again each time it (re)subscribes and renews its leases.
        """
        key = session_key(session_id, "commands")
        payload = json.dumps(command, sort_keys=True)
        pipe = self.aio.pipeline(transaction=True)
        pipe.hset(key, payload, "1")
        pipe.expire(key, max(60, int(self.lease_ttl * 6)))
        pipe.publish(COMMANDS, json.dumps({"session_id": session_id, **command}))
        await pipe.execute()

    def _on_command(self, session_id: str, command: dict[str, Any]) -> bool:
        """Carry out a command if this process owns the session's run; True when done."""
        entry = self.owned.get(session_id)
        if entry is None:
            return False
        run = entry[0]
        if command["type"] == "run.cancel" and command.get("run_id") == run.id:
            run.cancel()
        elif command["type"] == "tool.cancel":
            call = run.session.calls.get(command.get("call_id", ""))
            if call is not None:
                call.cancel("user")
        return True

    async def _stored_commands(self, client: redis.asyncio.Redis) -> None:
        """Carry out the commands stored for the runs this process owns."""
        owned = list(self.owned)
        if not owned:
            return
        pipe = client.pipeline(transaction=False)
        for session_id in owned:
            pipe.hkeys(session_key(session_id, "commands"))
        done = client.pipeline(transaction=False)
        for session_id, stored in zip(owned, await pipe.execute(), strict=True):
            for payload in stored:
                if self._on_command(session_id, json.loads(payload)):
                    done.hdel(session_key(session_id, "commands"), payload)
        await done.execute()

    async def _listen(self) -> None:
        client = async_client(self.url, timeout=None)
        try:
            while True:
                try:
                    async with client.pubsub() as pubsub:
                        await pubsub.subscribe(COMMANDS)
                        # What was sent while nobody listened (a Redis restart): stored.
                        await self._stored_commands(self.aio)
                        async for message in pubsub.listen():
                            if message["type"] == "message":
                                command = json.loads(message["data"])
                                session_id = command.pop("session_id", "")
                                if self._on_command(session_id, command):
                                    await self.aio.hdel(session_key(session_id, "commands"),
                                                        json.dumps(command, sort_keys=True))
                except UNREACHABLE:
                    await anyio.sleep(0.5)
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    # -- life -----------------------------------------------------------------------

    async def healthy(self) -> bool:
        """Redis answers and the last write went through (asked from a worker thread: a
        stalled Redis must not freeze the loop)."""
        return await anyio.to_thread.run_sync(self.logs.ping)

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """The runs, writer, tailer, lease keeper, sweeper and command listener, until
        cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                self._runs = tg
                tg.start_soon(self.logs.serve)
                tg.start_soon(self._keep_leases)
                tg.start_soon(self._sweep)
                tg.start_soon(self._listen)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self.aio.aclose()

    def closing(self) -> None:
        self._closing = True

    async def shutdown(self, sessions: Iterable[Session]) -> None:
        """Write what is still queued (runs have ended by now).

        A session this process only read may have run elsewhere since: saving it here
        would undo that run, so nothing is saved.
        """
        await self.logs.flush(2.0)

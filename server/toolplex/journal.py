"""Session logs written through to the SQLite store, so ``seq`` outlives the process.

[protocol] ``seq`` is never reused: not after a crash, not after a restart. Every event
is written to the store before any reader may see it: appends are queued, written in
one transaction per loop pass by :meth:`Journal.serve`, and only then made visible
(:meth:`~toolplex.log.EventLog.hold`). A ``kill -9`` loses at most events no reader
was sent; after a restart the log goes on from the highest seq ever stored, and each
session's retained window is read back, so a reader resumes from its last seq with no
gap and no duplicate.

When the server starts again, every run the log shows without a terminal event gets
``run.error`` ``interrupted``, and each call it left open ``tool.error`` ``interrupted``
(:func:`interrupt`).
"""

from __future__ import annotations

import logging
import sqlite3

import anyio

from .events import (
    TERMINAL_CALL_TYPES,
    TERMINAL_RUN_TYPES,
    BaseEvent,
    RunError,
    ToolFailed,
    error_dict,
    from_dict,
)
from .log import EventLog
from .store import Store

logger = logging.getLogger("toolplex.journal")


class Journal:
    """Writes every followed session's appended events to ``store``, a batch per loop pass,
    and keeps each session's stored window at its log's ``retain``.

    Args:
        store: The SQLite store (a file: ``:memory:`` would survive nothing).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        store.keeps_events = True
        self._pending: list[BaseEvent] = []
        self._logs: dict[str, EventLog] = {}
        self._more = anyio.Event()
        self._trimmed: dict[str, int] = {}

    def follow(self, log: EventLog) -> None:
        """Write ``log``'s appends through; readers see each once it is stored."""
        log.hold()
        self._logs[log.session_id] = log
        log.observers.append(self._queue)

    def forget(self, session_id: str) -> None:
        """Stop following a session (it left memory; what is queued is still written)."""
        self._logs.pop(session_id, None)

    def _queue(self, event: BaseEvent) -> None:
        self._pending.append(event)
        self._more.set()

    def flush(self) -> None:
        """Write what is queued in one transaction, then let readers see it."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            turns = [e.session_id for e in batch
                     if e.type == "run.started" and getattr(e, "trigger", None) == "job"]
            self.store.append_events([(e.session_id, e.seq, e.to_json()) for e in batch],
                                     job_turns=turns)
        except BaseException:
            self._pending[:0] = batch
            raise
        heads: dict[str, int] = {}
        for event in batch:
            heads[event.session_id] = event.seq
        for session_id, head in heads.items():
            log = self._logs.get(session_id)
            if log is None:
                continue
            log.release(head)
            # The stored window is trimmed in steps of a window, not on every batch.
            if head - self._trimmed.get(session_id, 0) >= 2 * log.retain:
                self.store.trim_events(session_id, head - log.retain)
                self._trimmed[session_id] = head

    async def serve(self) -> None:
        """Write queued events, a batch per loop pass, until cancelled."""
        try:
            while True:
                await self._more.wait()
                self._more = anyio.Event()
                try:
                    self.flush()
                except sqlite3.Error:
                    # Readers wait (nothing unstored is shown); the batch is tried again.
                    logger.exception("events not stored; retrying")
                    await anyio.sleep(0.5)
                    self._more.set()
        finally:
            self.flush()


def restore(store: Store, session_id: str, retain: int, head: int) -> EventLog:
    """A session's log as stored before a restart: its window, going on from its head."""
    stored = [from_dict(body) for body in store.events(session_id, retain)]
    if not stored or stored[-1].seq < head:  # (stored before events were)
        return EventLog(session_id, retain=retain, head=head)
    log = EventLog(session_id, retain=retain, head=stored[0].seq - 1)
    for event in stored:
        log.insert(event)
    return log


def interrupt(log: EventLog) -> list[str]:
    """End every run the retained log shows open: ``tool.error`` ``interrupted`` for each
    call left open, then ``run.error`` ``interrupted``. Returns the runs ended."""
    open_runs: dict[str, dict[str, None]] = {}
    for event in log.replay():
        run_id = event.run_id
        if run_id is None:
            continue
        if event.type == "run.started":
            open_runs[run_id] = {}
        elif event.type in TERMINAL_RUN_TYPES:
            open_runs.pop(run_id, None)
        elif run_id in open_runs:
            call_id = getattr(event, "call_id", None)
            if call_id is None:
                continue
            if event.type == "tool.call.start":
                open_runs[run_id][call_id] = None
            elif event.type in TERMINAL_CALL_TYPES:
                open_runs[run_id].pop(call_id, None)
    message = "the server stopped while this was running"
    for run_id, calls in open_runs.items():
        for call_id in calls:
            log.append(ToolFailed(run_id=run_id, call_id=call_id,
                                  error=error_dict("interrupted", message)))
        log.append(RunError(run_id=run_id, error=error_dict("interrupted", message)))
        logger.warning("run %s ended: interrupted by a restart", run_id,
                       extra={"session_id": log.session_id, "run_id": run_id})
    return list(open_runs)

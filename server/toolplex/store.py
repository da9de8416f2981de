"""What must survive a restart in the embedded default: sessions and jobs, in SQLite.

One file in WAL mode (``:memory:`` for tests). Writes are a few small rows per
run or job, done on the event loop: a WAL commit with ``synchronous=NORMAL``
does not fsync, and survives a process crash (``kill -9``), not a power cut.
Session tokens are stored as SHA-256 hashes, never in the clear.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, token_hash TEXT NOT NULL, history TEXT NOT NULL,
    head_seq INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, session_id TEXT NOT NULL, call_id TEXT NOT NULL,
    tool TEXT NOT NULL, via TEXT NOT NULL, args TEXT NOT NULL, status TEXT NOT NULL,
    output TEXT, error TEXT, progress REAL, total REAL, message TEXT,
    created REAL NOT NULL, expires REAL NOT NULL, completed REAL,
    delivered INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (status, delivered);
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_ids (id TEXT PRIMARY KEY, job_id TEXT, seen REAL);
"""

OPEN = ("pending", "running")
"""Job statuses that may still change."""


class Store:
    """The SQLite file behind sessions and jobs.

    Args:
        path: A file path, or ``:memory:``.
    """

    shared = False
    """One process's file: what it holds may be cached."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.keeps_events = False
        """Set by a journal writing the sessions' events here (then deliveries wait for
        their turn's ``run.started`` to be stored)."""
        self._deliveries: dict[str, list[str]] = {}

    def _run(self, sql: str,
             args: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def save_session(self, session_id: str, token_hash: str, history: list[dict[str, Any]],
                     head_seq: int) -> None:
        """Write a session's history and log head."""
        self._run(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "history=excluded.history, head_seq=excluded.head_seq, updated=excluded.updated",
            (session_id, token_hash, json.dumps(history, default=str), head_seq, time.time()))

    def sessions(self) -> list[dict[str, Any]]:
        """Every stored session: ``id, token_hash, history, head_seq, updated``."""
        rows = self._run(
            "SELECT id, token_hash, history, head_seq, updated FROM sessions").fetchall()
        return [{**dict(r), "history": json.loads(r["history"])} for r in rows]

    def delete_session(self, session_id: str) -> None:
        """Forget a session and its events (its jobs stay until they end)."""
        self._run("DELETE FROM sessions WHERE id = ?", (session_id,))
        self._run("DELETE FROM events WHERE session_id = ?", (session_id,))

    def deliver_on_start(self, session_id: str, job_ids: list[str]) -> None:
        """The jobs' completions go to the session's next job turn: mark them delivered
        in the transaction that stores its ``run.started`` (:meth:`append_events`), or
        now when this store keeps no events. A kill before that leaves them undelivered
        (delivered again after the restart); after it, the turn has started once."""
        if self.keeps_events:
            self._deliveries.setdefault(session_id, []).extend(job_ids)
        else:
            self.mark_delivered(job_ids)

    def append_events(self, rows: Iterable[tuple[str, int, str]],
                      job_turns: Iterable[str] = ()) -> None:
        """Store events ``(session_id, seq, JSON)`` in one transaction, with the jobs that
        the job turns started in it (by session id) delivered."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?)", rows)
                for session_id in job_turns:
                    for job_id in self._deliveries.pop(session_id, []):
                        self._db.execute("UPDATE jobs SET delivered = 1 WHERE id = ?",
                                         (job_id,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def events(self, session_id: str, limit: int) -> list[dict[str, Any]]:
        """A session's newest ``limit`` stored events, oldest first, decoded."""
        rows = self._run("SELECT body FROM events WHERE session_id = ? ORDER BY seq DESC "
                         "LIMIT ?", (session_id, limit)).fetchall()
        return [json.loads(r["body"]) for r in reversed(rows)]

    def trim_events(self, session_id: str, upto: int) -> None:
        """Forget a session's stored events up to seq ``upto`` (out of its window)."""
        self._run("DELETE FROM events WHERE session_id = ? AND seq <= ?", (session_id, upto))

    def insert_job(self, job: dict[str, Any]) -> None:
        """Store a new job row."""
        self._run(
            "INSERT INTO jobs (id, session_id, call_id, tool, via, args, status, created, "
            "expires) VALUES (:id, :session_id, :call_id, :tool, :via, :args, :status, "
            ":created, :expires)", {**job, "args": json.dumps(job["args"], default=str)})

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job row, JSON fields decoded."""
        row = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _decode(row) if row else None

    def jobs(self, *, session_id: str | None = None, open_only: bool = False,
             undelivered: bool = False) -> list[dict[str, Any]]:
        """Jobs matching the filters, oldest first."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        if open_only:
            sql += " AND status IN ('pending', 'running')"
        if undelivered:
            sql += " AND status NOT IN ('pending', 'running') AND delivered = 0"
        return [_decode(r) for r in self._run(sql + " ORDER BY created", tuple(args))]

    def progress(self, job_id: str, progress: float, total: float | None,
                 message: str | None) -> None:
        """Record a job's progress."""
        self._run("UPDATE jobs SET progress = ?, total = ?, message = ? WHERE id = ?",
                  (progress, total, message, job_id))

    def finish(self, job_id: str, status: str, output: Any = None,
               error: dict[str, Any] | None = None) -> bool:
        """End an open job. Returns False when it had already ended (nothing changes)."""
        cursor = self._run(
            "UPDATE jobs SET status = ?, output = ?, error = ?, completed = ? "
            "WHERE id = ? AND status IN ('pending', 'running')",
            (status, json.dumps(output, default=str) if output is not None else None,
             json.dumps(error) if error is not None else None, time.time(), job_id))
        return cursor.rowcount == 1

    def mark_delivered(self, job_ids: list[str]) -> None:
        """The jobs' completions reached a run: never hand them over again."""
        for job_id in job_ids:
            self._run("UPDATE jobs SET delivered = 1 WHERE id = ?", (job_id,))

    def first_webhook(self, webhook_id: str, job_id: str) -> bool:
        """True the first time ``webhook_id`` is seen; a replay returns False."""
        cursor = self._run("INSERT OR IGNORE INTO webhook_ids VALUES (?, ?, ?)",
                           (webhook_id, job_id, time.time()))
        return cursor.rowcount == 1

    def forget_webhook(self, webhook_id: str) -> None:
        """Un-see ``webhook_id``: its delivery was not applied, and a retry must be."""
        self._run("DELETE FROM webhook_ids WHERE id = ?", (webhook_id,))


    def hold_workers(self, owner: str, job_ids: list[str], ttl: float) -> None:
        """Nothing to hold: this file is one process's; :meth:`JobManager.recover` takes
        its worker jobs over after a restart."""

    def claim_lost_workers(self, owner: str, ttl: float) -> list[dict[str, Any]]:
        """None: see :meth:`hold_workers`."""
        return []


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("args", "output", "error"):
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out

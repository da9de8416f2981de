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
        """Forget a session (its jobs stay until they end)."""
        self._run("DELETE FROM sessions WHERE id = ?", (session_id,))

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


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("args", "output", "error"):
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out

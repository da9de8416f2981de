"""A job's completion is marked delivered in the transaction that stores its turn's
``run.started`` (with a file): a kill before leaves it undelivered, after, it ran once."""

from __future__ import annotations

import time
from pathlib import Path

from toolplex.events import RunStarted
from toolplex.journal import Journal
from toolplex.log import EventLog
from toolplex.store import Store


def _job(store: Store) -> str:
    now = time.time()
    store.insert_job({"id": "j_1", "session_id": "s_1", "call_id": "c_1", "tool": "t",
                      "via": "webhook", "args": {}, "status": "pending", "created": now,
                      "expires": now + 60})
    assert store.finish("j_1", "succeeded", {"ok": True})
    return "j_1"


def test_a_completion_stays_undelivered_until_its_turn_is_stored(tmp_path: Path) -> None:
    path = str(tmp_path / "t.sqlite")
    store = Store(path)
    journal = Journal(store)
    log = EventLog("s_1")
    journal.follow(log)
    store.deliver_on_start("s_1", [_job(store)])
    log.append(RunStarted(run_id="r_1", trigger="job"))
    # A kill here: the turn's run.started was never stored, nor the delivery.
    assert [r["id"] for r in Store(path).jobs(undelivered=True)] == ["j_1"]
    journal.flush()
    assert Store(path).jobs(undelivered=True) == [], "delivered with the stored run.started"
    assert log.head_seq == 1, "and readers see the event only now"


def test_without_a_journal_the_completion_is_delivered_at_once() -> None:
    store = Store()
    store.deliver_on_start("s_1", [_job(store)])
    assert store.jobs(undelivered=True) == []

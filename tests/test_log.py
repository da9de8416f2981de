from __future__ import annotations

import gc

import anyio

from toolplex import EventLog
from toolplex.events import TextDelta
from toolplex.log import Gap


def _fill(log: EventLog, n: int) -> None:
    for i in range(n):
        log.append(TextDelta(run_id="r", message_id="m", delta=str(i)))


def test_append_assigns_gapless_seq_from_one() -> None:
    log = EventLog("s_1")
    _fill(log, 5)
    assert [e.seq for e in log.replay(0)] == [1, 2, 3, 4, 5], "seq must be gapless from 1"
    assert all(e.session_id == "s_1" and e.ts > 0 for e in log.replay(0))


def test_replay_returns_only_events_after_the_cursor() -> None:
    log = EventLog("s")
    _fill(log, 6)
    assert [e.seq for e in log.replay(4)] == [5, 6]
    assert log.replay(6) == []


def test_a_window_at_its_limit_keeps_no_fallen_event_alive() -> None:
    log = EventLog("s", retain=100)
    _fill(log, 1_099)  # the list is trimmed per 100 fallen: 99 have fallen since the last
    gc.collect()
    alive = sum(1 for o in gc.get_objects() if type(o) is TextDelta and o.session_id == "s")
    assert alive == 100, "events that left the window must be freed at once, not at a trim"
    assert [e.seq for e in log.replay(0)] == list(range(1_000, 1_100))


def test_cursor_older_than_the_window_reports_a_gap() -> None:
    log = EventLog("s", retain=3)
    _fill(log, 10)
    assert log.first_seq == 8
    assert log.gap_after(2) == Gap(3, 7)
    assert log.gap_after(7) is None


async def test_tail_replays_then_follows_live_without_gap_or_duplicate() -> None:
    log = EventLog("s")
    _fill(log, 3)
    seen: list[int] = []

    async def reader() -> None:
        async for item in log.tail(after=1):
            assert not isinstance(item, Gap)
            seen.append(item.seq)
            if item.seq == 6:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        _fill(log, 3)
    assert seen == [2, 3, 4, 5, 6]


async def test_tail_starts_with_gap_when_behind_the_window() -> None:
    log = EventLog("s", retain=2)
    _fill(log, 5)
    log.close()
    items = [item async for item in log.tail(after=0)]
    assert items[0] == Gap(1, 3)
    assert [e.seq for e in items[1:]] == [4, 5]  # type: ignore[union-attr]


async def test_a_cancelled_reader_leaves_the_other_waiting_readers_woken_by_the_next_event(
) -> None:
    log = EventLog("s")
    _fill(log, 1)
    seen: list[int] = []

    async def follow() -> None:
        await log.wait_beyond(1)
        seen.append(log.head_seq)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        async with anyio.create_task_group() as leaving:
            leaving.start_soon(log.wait_beyond, 1)
            await anyio.wait_all_tasks_blocked()
            leaving.cancel_scope.cancel()  # one reader goes while both wait
        assert len(log._waiters) == 1, "the cancelled reader's wait is gone, the other's kept"
        _fill(log, 1)
    assert seen == [2], "the reader still waiting is woken by the next event"
    assert not log._waiters

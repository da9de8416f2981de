"""Scale-out under operations: kill -9 and fast retries, dropped pub/sub, a stalled Redis.

Several real `uvicorn` processes on one real `redis-server`; the session's log is read
through the real `websockets` client on a process other than the one that did the work,
and checked with PROTOCOL.md's rules.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import anyio
import httpx
from redis import Redis

from toolplex.backends.redis.keys import RUNS, lease_key
from toolplex.backends.redis.lease import Leases, Orphan
from toolplex.events import TERMINAL_RUN_TYPES
from toolplex.server.webhooks import callback_token, sign
from toolplex.session import hash_token
from toolplex.testing import RedisServer, check_protocol, of_type

from . import test_cluster
from .test_cluster import LEASE_TTL, SECRET, Reader, _auth, _session, _start, _stored

redis_server = test_cluster.redis_server
cluster = test_cluster.cluster


def _run_spans(events: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(run_id, seq of run.started, seq of its terminal event) per run, in order."""
    started = {e["run_id"]: e["seq"] for e in of_type(events, "run.started")}
    ended = {e["run_id"]: e["seq"] for e in events if e["type"] in TERMINAL_RUN_TYPES}
    return [(run, seq, ended[run]) for run, seq in started.items()]


class TestAnOrphanedRun:
    """A run whose process died must end before another run of its session starts."""

    def test_taking_its_lease_yields_the_orphan_until_a_sweeper_has_ended_it(
            self, redis_server: RedisServer) -> None:
        client = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            dead, alive = Leases(client, "p_dead", 30), Leases(client, "p_alive", 30)
            lease = dead.take("s_1", "r_old")
            assert isinstance(lease, str)
            client.delete(lease_key("s_1"))  # its process died: the key expired
            orphan = alive.take("s_1", "r_new")
            assert isinstance(orphan, Orphan), "a new run must not take an orphan's session"
            assert orphan.value["run"] == "r_old"
            assert [o.session_id for o in alive.orphans()] == ["s_1"]
            sweep = alive.claim(orphan)
            assert sweep is not None and json.loads(sweep)["lost"] == "p_dead"
            assert dead.claim(orphan) is None, "one process claims an orphan"
            # While its sweeper writes the dead run's terminal events, the session is taken.
            assert alive.take("s_1", "r_new") is None
            assert alive.orphans() == []
            alive.give_back("s_1", sweep)
            assert client.hget(RUNS, "s_1") is None
            assert isinstance(alive.take("s_1", "r_new"), str)
        finally:
            client.close()

    def test_renewing_every_lease_at_once_keeps_them_and_names_the_lost_ones(
            self, redis_server: RedisServer) -> None:
        client = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            mine, other = Leases(client, "p_mine", 1), Leases(client, "p_other", 30)
            owned = {f"s_{i}": mine.take(f"s_{i}", f"r_{i}") for i in range(300)}
            assert all(isinstance(lease, str) for lease in owned.values())
            leases = {sid: lease for sid, lease in owned.items() if isinstance(lease, str)}
            client.delete(lease_key("s_7"))  # expired, and taken since by another process
            assert isinstance(other.take("s_7", "r_other"), Orphan)
            client.hdel(RUNS, "s_7")
            assert isinstance(other.take("s_7", "r_other"), str)
            client.delete(lease_key("s_8"))  # expired, not taken again
            mine.ttl = 30
            assert mine.renew_all(leases) == {"s_7", "s_8"}
            assert client.pttl(lease_key("s_0")) > 20_000, "renewed by a whole TTL"
            assert json.loads(client.get(lease_key("s_7")))["owner"] == "p_other"
            assert mine.renew_all({}) == set()
        finally:
            client.close()

    async def test_a_start_retried_every_25_ms_after_a_kill_9_runs_after_the_dead_run_ends(
            self, redis_server: RedisServer, cluster: Any) -> None:
        a, b = cluster(redis_server, 2)
        sid, token = _session(a)
        async with Reader(b, sid, token) as reader, httpx.AsyncClient() as client:
            dead = await _start(a, sid, token, "slow")
            await reader.until(lambda e: e["type"] == "tool.output.delta")
            os.kill(a.pid, signal.SIGKILL)
            refused = 0
            with anyio.fail_after(LEASE_TTL * 4 + 10):
                while True:
                    answer = await client.post(f"{b.http}/v1/sessions/{sid}/runs",
                                               json={"input": "tick"}, headers=_auth(token))
                    if answer.status_code == 202:
                        break
                    assert answer.status_code == 409, answer.text
                    assert answer.json()["error"]["code"] == "run_active"
                    refused += 1
                    await anyio.sleep(0.025)
            again = answer.json()["run_id"]
            assert (await reader.until_run_ends(again))["outcome"] == "success"
        assert refused > 0, "the retries began while the dead run's lease still held"
        check_protocol(reader.events, first_seq=1)
        spans = _run_spans(reader.events)
        assert [run for run, _, _ in spans] == [dead, again]
        assert spans[0][2] < spans[1][1], "the dead run ended before the next run started"
        lost = [e for e in reader.events if e.get("run_id") == dead]
        assert lost[-1]["type"] == "run.error" and lost[-1]["error"]["code"] == "owner_lost"
        assert [e["error"]["code"] for e in of_type(lost, "tool.error")] == ["owner_lost"]
        assert _stored(redis_server, sid) == reader.events


def _wait_for(condition: Any, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class TestACancel:
    """A cancel accepted (202) reaches the run, also while its owner re-subscribes."""

    async def test_a_cancel_sent_while_the_owner_is_not_subscribed_still_cancels_its_run(
            self, redis_server: RedisServer, cluster: Any) -> None:
        a, b = cluster(redis_server, 2)
        sid, token = _session(a)
        admin = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            async with Reader(b, sid, token) as reader, httpx.AsyncClient() as client:
                run_id = await _start(a, sid, token, "slow")
                await reader.until(lambda e: e["type"] == "tool.output.delta")
                call_id = of_type(reader.events, "tool.call.start")[0]["call_id"]
                # Every pub/sub connection dropped, as a Redis restart does: for a while
                # nobody listens, and a PUBLISH reaches no one.
                admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                cancel = await client.post(f"{b.http}/v1/sessions/{sid}/calls/{call_id}/cancel",
                                           headers=_auth(token))
                assert cancel.status_code == 202, cancel.text
                await reader.until(lambda e: e["type"] == "tool.cancelled", limit=LEASE_TTL * 4)
                assert (await reader.until_run_ends(run_id))["outcome"] == "success"
                # The same for run.cancel.
                second = await _start(a, sid, token, "slow")
                await reader.until(
                    lambda e: e["type"] == "tool.output.delta" and e["run_id"] == second)
                admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                stop = await client.post(f"{b.http}/v1/sessions/{sid}/runs/{second}/cancel",
                                         headers=_auth(token))
                assert stop.status_code == 202, stop.text
                end = await reader.until_run_ends(second, limit=LEASE_TTL * 4)
        finally:
            admin.close()
        assert end["type"] == "run.finished" and end["outcome"] == "cancelled"
        assert [(e["call_id"], e["reason"]) for e in of_type(reader.events, "tool.cancelled")
                ] == [(call_id, "user"), (of_type(reader.events, "tool.call.start")[1]["call_id"],
                                          "run_cancelled")]
        check_protocol(reader.events, first_seq=1)


async def _probe(client: httpx.AsyncClient, processes: Any,
                 reader: Reader | None = None) -> tuple[float, float]:
    """Seconds the slowest ``/metrics`` of ``processes`` took, and a ping on ``reader``'s
    WebSocket (0 without one): what a frozen event loop would make wait."""
    metrics = 0.0
    for process in processes:
        began = time.monotonic()
        answer = await client.get(f"{process.http}/metrics")
        assert answer.status_code == 200
        metrics = max(metrics, time.monotonic() - began)
    ping = 0.0
    if reader is not None:
        assert reader.ws is not None
        began = time.monotonic()
        await (await reader.ws.ping())
        ping = time.monotonic() - began
    return metrics, ping


class TestAStalledRedis:
    """A stalled Redis may fail runs clearly; it never freezes a process's event loop."""

    async def test_metrics_answer_at_once_on_every_process_while_redis_is_stopped(
            self, redis_server: RedisServer, cluster: Any) -> None:
        a, b = cluster(redis_server, 2)
        sid, token = _session(a)
        await _start(a, sid, token, "slow")  # a run whose lease A keeps renewing
        assert redis_server.process is not None
        slowest = 0.0
        async with httpx.AsyncClient(timeout=5) as client:
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            try:
                stall_ends = time.monotonic() + 3
                while time.monotonic() < stall_ends:
                    metrics, _ = await _probe(client, (a, b))
                    slowest = max(slowest, metrics)
                    await anyio.sleep(0.05)
                # /healthz asks Redis, from a worker thread: it says so, in its timeout.
                health = await client.get(f"{a.http}/healthz")
                assert health.status_code == 503
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)
        # A Redis call blocking the loop waits for its socket timeout (1 s).
        assert slowest < 0.75, f"/metrics took {slowest:.2f} s while Redis was stalled"


    async def test_requests_that_need_redis_fail_503_while_other_streams_go_on(
            self, redis_server: RedisServer, cluster: Any) -> None:
        a, b = cluster(redis_server, 2)
        sid, token = _session(a)
        async with Reader(b, sid, token) as reader, httpx.AsyncClient(timeout=30) as client:
            # A webhook job waiting for its delivery, and an open WebSocket on B.
            export = await _start(a, sid, token, "export")
            await reader.until_run_ends(export)
            job_id = of_type(reader.events, "job.pending")[0]["job_id"]
            hook = f"{b.http}/v1/webhooks/{job_id}?token={callback_token(SECRET, job_id)}"

            def delivery(webhook_id: str) -> dict[str, Any]:
                body = json.dumps({"rows": 7}).encode()
                stamp = int(time.time())
                return {"content": body, "headers": {
                    "webhook-id": webhook_id, "webhook-timestamp": str(stamp),
                    "webhook-signature": sign(SECRET, webhook_id, stamp, body),
                    "content-type": "application/json"}}

            requests = {
                "run.start": lambda: client.post(f"{b.http}/v1/sessions/{sid}/runs",
                                                 json={"input": "tick"}, headers=_auth(token)),
                "run.cancel": lambda: client.post(
                    f"{b.http}/v1/sessions/{sid}/runs/r_nope/cancel", headers=_auth(token)),
                "session": lambda: client.post(f"{b.http}/v1/sessions"),
                "job status": lambda: client.get(f"{b.http}/v1/jobs/{job_id}",
                                                 headers=_auth(token)),
                "webhook": lambda: client.post(hook, **delivery("msg_stalled")),
            }
            answers: dict[str, tuple[int, str, float]] = {}
            done = anyio.Event()

            async def ask(name: str) -> None:
                began = time.monotonic()
                answer = await requests[name]()
                answers[name] = (answer.status_code, answer.json()["error"]["code"],
                                 time.monotonic() - began)
                if len(answers) == len(requests) + 1:
                    done.set()

            async def command() -> None:
                # run.start on the open WebSocket: its session is held, so the lease is
                # asked for (and refused by the stalled Redis) in a command.error.
                began = time.monotonic()
                await reader.send({"type": "run.start", "input": "tick", "ref": "w1"})
                assert reader.ws is not None
                frame = json.loads(await reader.ws.recv())
                answers["ws run.start"] = (0 if frame["type"] == "command.error" else 1,
                                           frame["error"]["code"], time.monotonic() - began)
                if len(answers) == len(requests) + 1:
                    done.set()

            assert redis_server.process is not None
            slowest: dict[str, float] = {"metrics": 0.0, "ping": 0.0}
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            try:
                with anyio.fail_after(20):  # each one ends in a socket timeout, not a hang
                    async with anyio.create_task_group() as tg:
                        for name in requests:
                            tg.start_soon(ask, name)
                        tg.start_soon(command)
                        while not done.is_set():
                            metrics, ping = await _probe(client, (a, b), reader)
                            slowest["metrics"] = max(slowest["metrics"], metrics)
                            slowest["ping"] = max(slowest["ping"], ping)
                            await anyio.sleep(0.05)
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)
            assert {name: answer[:2] for name, answer in answers.items()} == {
                **dict.fromkeys(requests, (503, "store_unavailable")),
                "ws run.start": (0, "store_unavailable")}, answers
            # A Redis call blocking the loop waits for its socket timeout (1 s).
            assert slowest["metrics"] < 0.75 and slowest["ping"] < 0.75, slowest

            # Redis is back: every one of them works again.
            with anyio.fail_after(LEASE_TTL * 4 + 10):
                while True:  # (a lease the stalled start asked for may hold a TTL)
                    started = await requests["run.start"]()
                    if started.status_code == 202:
                        break
                    assert started.status_code == 409, started.text
                    await anyio.sleep(0.05)
            run_id = started.json()["run_id"]
            assert (await reader.until_run_ends(run_id))["outcome"] == "success"
            assert (await requests["session"]()).status_code == 201
            cancel = await requests["run.cancel"]()
            assert cancel.json()["error"]["code"] == "unknown_run", cancel.text
            status = await requests["job status"]()
            assert status.status_code == 200 and status.json()["status"] == "pending"
            delivered = await client.post(hook, **delivery("msg_after"))
            assert delivered.json() == {"ok": True}, delivered.text
            await reader.until(lambda e: e["type"] == "run.started" and e["trigger"] == "job")
            await reader.until_run_ends(reader.events[-1]["run_id"])
        assert [e["status"] for e in of_type(reader.events, "job.completed")] == ["succeeded"]
        check_protocol(reader.events, first_seq=1)


    async def test_idle_sessions_swept_while_redis_is_stopped_freeze_nothing(
            self, redis_server: RedisServer, cluster: Any) -> None:
        # Idle after 1 s, swept every 0.5 s: each sweep asks Redis about the jobs of the
        # idle sessions before it forgets them.
        [a] = cluster(redis_server, 1, extra={"TOOLPLEX_IDLE_TTL": "1"})
        sid, token = _session(a)
        for _ in range(3):
            _session(a)  # sessions nobody reads: idle after 1 s
        assert redis_server.process is not None
        slowest = 0.0
        async with Reader(a, sid, token) as reader, httpx.AsyncClient(timeout=5) as client:
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            try:
                stall_ends = time.monotonic() + 3  # several sweeps, each past the idle TTL
                while time.monotonic() < stall_ends:
                    metrics, ping = await _probe(client, (a,), reader)
                    slowest = max(slowest, metrics + ping)
                    await anyio.sleep(0.05)
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)
            assert slowest < 0.75, f"/metrics and a ping took {slowest:.2f} s"
            # Redis is back: the sweeps go on (the idle sessions go), the process serves.
            with anyio.fail_after(10):
                while True:
                    gauge = (await client.get(f"{a.http}/metrics")).text
                    if "toolplex_sessions 1.0" in gauge:
                        break
                    await anyio.sleep(0.1)
            run_id = await _start(a, sid, token, "tick")
            assert (await reader.until_run_ends(run_id))["outcome"] == "success"
        check_protocol(reader.events, first_seq=1)


class TestAToken:
    """A session's token is checked against Redis on every process, every time."""

    async def test_a_token_changed_in_redis_holds_at_once_on_every_process(
            self, redis_server: RedisServer, cluster: Any) -> None:
        a, b = cluster(redis_server, 2)
        sid, token = _session(a)
        admin = Redis.from_url(redis_server.url, decode_responses=True)

        async def start(process: Any, token: str) -> int:
            async with httpx.AsyncClient() as client:
                answer = await client.post(f"{process.http}/v1/sessions/{sid}/runs",
                                           json={"input": "nothing to do"},
                                           headers=_auth(token))
            if answer.status_code == 202:  # (wait for it to end: one run at a time)
                async with Reader(process, sid, token) as reader:
                    await reader.until_run_ends(answer.json()["run_id"])
            return answer.status_code

        try:
            assert [await start(a, token), await start(b, token)] == [202, 202]
            new = "rotated-token"
            admin.hset(f"tp:s:{sid}", "token_hash", hash_token(new))
            assert [await start(a, token), await start(b, token)] == [401, 401], (
                "the old token must be refused on every process")
            assert [await start(a, new), await start(b, new)] == [202, 202]
            # Saves by either process (each run's end) keep the rotated hash.
            assert admin.hget(f"tp:s:{sid}", "token_hash") == hash_token(new)
            admin.hset(f"tp:s:{sid}", "token_hash", "revoked")
            assert [await start(a, new), await start(b, new)] == [401, 401], (
                "a revoked session is refused on every process")
        finally:
            admin.close()


class TestWebhooks:
    """Concurrent deliveries to several processes: the one that completes the job says so."""

    async def test_of_five_concurrent_deliveries_one_is_ok_the_others_job_finished(
            self, redis_server: RedisServer, cluster: Any) -> None:
        a, b = cluster(redis_server, 2)
        sid, token = _session(a)
        async with Reader(a, sid, token) as reader:
            run_id = await _start(a, sid, token, "export")
            await reader.until_run_ends(run_id)
            job_id = of_type(reader.events, "job.pending")[0]["job_id"]
            url = f"/v1/webhooks/{job_id}?token={callback_token(SECRET, job_id)}"
            answers: list[httpx.Response] = []

            async def deliver(process: Any, n: int) -> None:
                body = json.dumps({"rows": n}).encode()
                stamp = int(time.time())
                headers = {"webhook-id": f"msg_{n}", "webhook-timestamp": str(stamp),
                           "webhook-signature": sign(SECRET, f"msg_{n}", stamp, body),
                           "content-type": "application/json"}
                async with httpx.AsyncClient() as client:
                    answers.append(await client.post(process.http + url, content=body,
                                                     headers=headers))

            async with anyio.create_task_group() as tg:
                for n in range(5):
                    tg.start_soon(deliver, (a, b)[n % 2], n)
            await reader.until(lambda e: e["type"] == "run.started" and e["trigger"] == "job")
            await reader.until_run_ends(reader.events[-1]["run_id"])
        ok = [r for r in answers if r.status_code == 200]
        assert [r.json() for r in ok] == [{"ok": True}], "exactly one delivery completed it"
        refused = [r.json()["error"]["code"] for r in answers if r.status_code != 200]
        assert refused == ["job_finished"] * 4
        completed = of_type(reader.events, "job.completed")
        assert len(completed) == 1
        check_protocol(reader.events, first_seq=1)


class TestARollingDeploy:
    """SIGTERM of the process owning a run ends that run for every reader, everywhere."""

    async def test_sigterm_of_the_owner_gives_readers_on_other_processes_one_terminal_event(
            self, redis_server: RedisServer, cluster: Any) -> None:
        a, b = cluster(redis_server, 2)
        sid, token = _session(a)
        async with Reader(b, sid, token) as reader:
            run_id = await _start(a, sid, token, "slow")
            await reader.until(lambda e: e["type"] == "tool.output.delta")
            os.kill(a.pid, signal.SIGTERM)
            # Within the shutdown grace, not a lease TTL later from a sweeper.
            end = await reader.until_run_ends(run_id, limit=LEASE_TTL + 10)
            assert (end["type"], end.get("outcome")) == ("run.finished", "cancelled") or (
                end["type"] == "run.error" and end["error"]["code"] == "interrupted")
            # The session takes a new run at once, on the other process.
            again = await _start(b, sid, token, "tick")
            assert (await reader.until_run_ends(again))["outcome"] == "success"
        check_protocol(reader.events, first_seq=1)
        ended = [e for e in reader.events if e.get("run_id") == run_id
                 and e["type"] in ("tool.result", "tool.error", "tool.cancelled")]
        assert len(ended) == 1, "the open call got its terminal event"
        assert _stored(redis_server, sid) == reader.events

"""Scale-out: several `uvicorn` processes of one app sharing a real `redis-server`.

Every test reads the session's log through the real `websockets` client or a real
SSE parser, on a process other than the one that did the work, and checks it with
PROTOCOL.md's rules: zero lost and zero duplicated events.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from httpx_sse import aconnect_sse
from redis import Redis, exceptions as redis_exceptions
from websockets.asyncio.client import ClientConnection, connect

from toolplex.backends.redis.keys import session_key
from toolplex.backends.redis.log import SharedLogs
from toolplex.events import TERMINAL_RUN_TYPES, RunStarted
from toolplex.server.webhooks import callback_token, sign
from toolplex.testing import RedisServer, check_protocol, of_type

from .conftest import Process

SECRET = "whsec_" + base64.b64encode(b"toolplex-cluster-test-secret-0123").decode()
LEASE_TTL = 1.5


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server with no persistence, stopped after the test."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def cluster(serve_process: Callable[..., Process]) -> Callable[[RedisServer, int], list[Process]]:
    """``cluster(redis, n)``: n server processes on that Redis."""

    def start(redis: RedisServer, n: int, retain: int = 10_000,
              extra: dict[str, str] | None = None) -> list[Process]:
        env = {"TOOLPLEX_REDIS_URL": redis.url, "TOOLPLEX_LEASE_TTL": str(LEASE_TTL),
               "TOOLPLEX_WEBHOOK_SECRET": SECRET, "TOOLPLEX_LOG_RETAIN": str(retain),
               **(extra or {})}
        return [serve_process("tests.e2e.apps:cluster_app", env=env) for _ in range(n)]

    return start


def _session(process: Process) -> tuple[str, str]:
    body = httpx.post(f"{process.http}/v1/sessions").json()
    return body["session_id"], body["token"]


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _start(process: Process, sid: str, token: str, text: str) -> str:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{process.http}/v1/sessions/{sid}/runs",
                                   json={"input": text}, headers=_auth(token))
    assert answer.status_code == 202, answer.text
    return answer.json()["run_id"]  # type: ignore[no-any-return]


class Reader:
    """A WebSocket reader that keeps every logged event it receives."""

    def __init__(self, process: Process, sid: str, token: str, after: int = 0) -> None:
        self.url = f"{process.ws}/v1/sessions/{sid}/ws?token={token}&after={after}"
        self.events: list[dict[str, Any]] = []
        self.other: list[dict[str, Any]] = []
        """Frames without a seq (command.error)."""
        self.ws: ClientConnection | None = None

    async def __aenter__(self) -> Reader:
        self.ws = await connect(self.url)
        hello = json.loads(await self.ws.recv())
        assert hello["type"] == "stream.hello"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def until(self, done: Callable[[dict[str, Any]], bool], limit: float = 15) -> None:
        """Read until an event satisfies ``done``."""
        assert self.ws is not None
        with anyio.fail_after(limit):
            while True:
                frame = json.loads(await self.ws.recv())
                if "seq" not in frame:
                    self.other.append(frame)
                    continue
                self.events.append(frame)
                if done(frame):
                    return

    async def until_run_ends(self, run_id: str, limit: float = 15) -> dict[str, Any]:
        await self.until(lambda e: e["type"] in TERMINAL_RUN_TYPES and e["run_id"] == run_id,
                         limit)
        return self.events[-1]

    async def send(self, command: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(command))


def _stored(redis: RedisServer, sid: str) -> list[dict[str, Any]]:
    """The session's stream as Redis holds it, read with redis-py (no toolplex code)."""
    client = Redis.from_url(redis.url, decode_responses=True)
    try:
        return [{**json.loads(fields["e"]), "seq": int(entry_id.split("-")[0])}
                for entry_id, fields in client.xrange(f"tp:s:{sid}:log")]
    finally:
        client.close()


async def _sse_log(process: Process, sid: str, token: str, head: int) -> list[dict[str, Any]]:
    """The whole log from seq 1 through ``head`` over SSE (a real SSE parser)."""
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=10) as client, aconnect_sse(
            client, "GET", f"{process.http}/v1/sessions/{sid}/events?after=0",
            headers=_auth(token)) as source:
        with anyio.fail_after(10):
            async for sse in source.aiter_sse():
                frame = json.loads(sse.data)
                if "seq" in frame:
                    assert sse.id == str(frame["seq"])
                    events.append(frame)
                    if frame["seq"] == head:
                        return events
    raise AssertionError("the SSE stream ended early")


async def test_a_reader_on_one_process_sees_a_run_started_through_another(
        redis_server: RedisServer, cluster: Any) -> None:
    a, b = cluster(redis_server, 2)
    sid, token = _session(a)
    async with Reader(a, sid, token) as reader:
        run_id = await _start(b, sid, token, "tick")
        end = await reader.until_run_ends(run_id)
    assert end["type"] == "run.finished" and end["outcome"] == "success"
    check_protocol(reader.events, first_seq=1)
    assert len(of_type(reader.events, "tool.output.delta")) == 20
    assert of_type(reader.events, "text.delta")[-1]["delta"] == "Ticked."
    # The same log, the same events, from the process that ran it, over SSE.
    assert await _sse_log(b, sid, token, end["seq"]) == reader.events


async def test_one_run_at_a_time_per_session_across_processes_and_commands_reach_the_owner(
        redis_server: RedisServer, cluster: Any) -> None:
    a, b = cluster(redis_server, 2)
    sid, token = _session(a)
    async with Reader(b, sid, token) as reader, httpx.AsyncClient() as client:
        first = await _start(a, sid, token, "slow")
        await reader.until(lambda e: e["type"] == "tool.output.delta")
        busy = await client.post(f"{b.http}/v1/sessions/{sid}/runs", json={"input": "tick"},
                                 headers=_auth(token))
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "run_active"
        assert first in busy.json()["error"]["message"]
        # tool.cancel over HTTP on B for a call running on A: the run goes on without it.
        call_id = of_type(reader.events, "tool.call.start")[0]["call_id"]
        cancel = await client.post(f"{b.http}/v1/sessions/{sid}/calls/{call_id}/cancel",
                                   headers=_auth(token))
        assert cancel.status_code == 202, cancel.text
        end = await reader.until_run_ends(first)
        assert end["outcome"] == "success"
        cancelled = of_type(reader.events, "tool.cancelled")
        assert [(e["call_id"], e["reason"]) for e in cancelled] == [(call_id, "user")]
        # run.cancel over B's WebSocket for a run owned by A.
        second = await _start(a, sid, token, "slow")
        await reader.until(lambda e: e["type"] == "tool.output.delta" and e["run_id"] == second)
        await reader.send({"type": "run.cancel", "run_id": "r_nope", "ref": "x"})
        await reader.send({"type": "run.cancel", "run_id": second})
        end = await reader.until_run_ends(second)
        assert end["outcome"] == "cancelled"
    assert [(f["type"], f["error"]["code"], f["ref"]) for f in reader.other] == [
        ("command.error", "unknown_run", "x")]
    check_protocol(reader.events, first_seq=1)
    assert of_type(reader.events, "tool.cancelled")[-1]["reason"] == "run_cancelled"


async def test_a_webhook_to_another_process_completes_the_job_once_and_one_turn_runs(
        redis_server: RedisServer, cluster: Any) -> None:
    a, b = cluster(redis_server, 2)
    sid, token = _session(a)
    async with Reader(a, sid, token) as on_a, Reader(b, sid, token) as on_b:
        run_id = await _start(a, sid, token, "export")
        await on_a.until_run_ends(run_id)
        job_id = of_type(on_a.events, "job.pending")[0]["job_id"]
        body = json.dumps({"rows": 42}).encode()

        def headers(msg_id: str) -> dict[str, str]:
            stamp = int(time.time())
            return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
                    "webhook-signature": sign(SECRET, msg_id, stamp, body),
                    "content-type": "application/json"}

        async with httpx.AsyncClient() as client:
            url = f"/v1/webhooks/{job_id}?token={callback_token(SECRET, job_id)}"
            first = await client.post(b.http + url, content=body, headers=headers("msg_1"))
            replay = await client.post(a.http + url, content=body, headers=headers("msg_1"))
            again = await client.post(a.http + url, content=body, headers=headers("msg_2"))
        assert first.json() == {"ok": True}
        assert replay.json() == {"ok": True, "replayed": True}
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
        for reader in (on_a, on_b):
            await reader.until(lambda e: e["type"] == "run.started" and e["trigger"] == "job")
            turn = reader.events[-1]["run_id"]
            end = await reader.until_run_ends(turn)
            assert end["outcome"] == "success"
        assert on_a.events == on_b.events
        with anyio.move_on_after(1.0):  # no second turn, no second completion
            await on_a.until(lambda e: True)
    check_protocol(on_a.events, first_seq=1)
    completed = of_type(on_a.events, "job.completed")
    assert [(e["job_id"], e["status"], e["output"]) for e in completed] == [
        (job_id, "succeeded", {"rows": 42})]
    assert [e["trigger"] for e in of_type(on_a.events, "run.started")] == ["user", "job"]
    said = "".join(e["delta"] for e in of_type(on_a.events, "text.delta") if e["run_id"] == turn)
    assert said.startswith("Reported: Job update: export succeeded.") and '"rows": 42' in said
    async with httpx.AsyncClient() as client:
        polled = (await client.get(f"{b.http}/v1/jobs/{job_id}", headers=_auth(token))).json()
    assert polled["status"] == "succeeded" and polled["output"] == {"rows": 42}


async def test_kill_9_of_the_run_owner_ends_its_run_with_owner_lost(
        redis_server: RedisServer, cluster: Any) -> None:
    a, b, c = cluster(redis_server, 3)
    sid, token = _session(a)
    async with Reader(c, sid, token) as reader:
        run_id = await _start(a, sid, token, "slow")
        await reader.until(lambda e: e["type"] == "tool.output.delta")
        await reader.until(lambda e: e["type"] == "tool.output.delta")
        os.kill(a.pid, signal.SIGKILL)
        end = await reader.until_run_ends(run_id, limit=LEASE_TTL * 4 + 5)
        assert end["type"] == "run.error" and end["error"]["code"] == "owner_lost"
        # The lease is gone with it: the session takes a new run, on another process.
        again = await _start(b, sid, token, "tick")
        assert (await reader.until_run_ends(again))["outcome"] == "success"
        with anyio.move_on_after(LEASE_TTL):  # no late event of the dead run
            await reader.until(lambda e: True)
    check_protocol(reader.events, first_seq=1)
    lost = [e for e in reader.events if e.get("run_id") == run_id]
    failed = of_type(lost, "tool.error")
    assert [e["error"]["code"] for e in failed] == ["owner_lost"]
    assert failed[0]["call_id"] == of_type(lost, "tool.call.start")[0]["call_id"]
    assert await _sse_log(b, sid, token, reader.events[-1]["seq"]) == reader.events
    assert _stored(redis_server, sid) == reader.events


async def test_a_circuit_opened_on_one_process_is_open_on_the_others(
        redis_server: RedisServer, cluster: Any) -> None:
    a, b = cluster(redis_server, 2)
    sid, token = _session(a)
    async with Reader(b, sid, token) as reader:
        first = await _start(a, sid, token, "break")
        await reader.until_run_ends(first)
        second = await _start(b, sid, token, "break")
        await reader.until_run_ends(second)
    check_protocol(reader.events, first_seq=1)
    by_run = {run: [e["error"]["code"] for e in of_type(reader.events, "tool.error")
                    if e["run_id"] == run] for run in (first, second)}
    assert by_run[first] == ["internal"] * 3
    assert [e["tool"] for e in of_type(reader.events, "tool.circuit_open")] == ["broken"]
    assert by_run[second] == ["circuit_open"] * 3  # B knew: no call ran


async def test_a_reader_resumes_on_another_process_from_its_seq(
        redis_server: RedisServer, cluster: Any) -> None:
    a, b = cluster(redis_server, 2)
    sid, token = _session(a)
    async with Reader(a, sid, token) as first:
        run_id = await _start(a, sid, token, "tick")
        await first.until(lambda e: e["type"] == "tool.output.delta" and e["index"] == 5)
    cursor = first.events[-1]["seq"]
    async with Reader(b, sid, token, after=cursor) as second:
        end = await second.until_run_ends(run_id)
    assert second.events[0]["seq"] == cursor + 1
    check_protocol(first.events + second.events, first_seq=1)
    assert await _sse_log(a, sid, token, end["seq"]) == first.events + second.events


async def test_a_cursor_older_than_the_stream_gets_a_gap_then_a_snapshot(
        redis_server: RedisServer, cluster: Any) -> None:
    a, b = cluster(redis_server, 2, retain=40)
    sid, token = _session(a)
    async with Reader(a, sid, token) as reader:
        for _ in range(2):  # 2 x 36 events: more than the 40 retained
            await reader.until_run_ends(await _start(a, sid, token, "tick"))
    head = reader.events[-1]["seq"]
    assert head == 72
    async with connect(f"{b.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
        frames = [json.loads(await ws.recv()) for _ in range(3)]
        assert frames[0] == {"type": "stream.hello", "session_id": sid, "head_seq": head,
                             "resume_from": 0}
        gap, snapshot = frames[1], frames[2]
        assert gap["type"] == "stream.gap" and gap["from_seq"] == 1
        assert snapshot["type"] == "stream.snapshot"
        assert [m["role"] for m in snapshot["messages"]].count("user") == 2
        rest = [json.loads(await ws.recv()) for _ in range(head - gap["to_seq"])]
    assert gap["to_seq"] <= head - 40
    assert rest == reader.events[gap["to_seq"]:]


async def test_redis_crash_and_restart_loses_no_acknowledged_event(
        cluster: Any) -> None:
    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(directory, durable=True).start()
        try:
            await _crash_and_restart(redis, cluster)
        finally:
            redis.kill()


async def _crash_and_restart(redis: RedisServer, cluster: Any) -> None:
    a, b = cluster(redis, 2)
    sid, token = _session(a)
    async with Reader(b, sid, token) as reader, httpx.AsyncClient(timeout=5) as client:
        run_id = await _start(a, sid, token, "slow")
        await reader.until(lambda e: e["type"] == "tool.output.delta" and e["index"] == 3)
        redis.kill()
        with anyio.fail_after(5):  # the server stays up and says it is unhealthy
            for process in (a, b):
                health = await client.get(f"{process.http}/healthz")
                assert health.status_code == 503 and health.json()["redis"] == "unreachable"
            refused = await client.post(f"{b.http}/v1/sessions")
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "store_unavailable"
            other = await client.post(f"{b.http}/v1/sessions/{sid}/runs",
                                      json={"input": "tick"}, headers=_auth(token))
            assert other.status_code == 503
            assert other.json()["error"]["code"] == "store_unavailable"
        received = len(reader.events)
        await anyio.sleep(1.5)  # an outage, not a blip: writes fail for over a second
        redis.start()
        end = await reader.until_run_ends(run_id, limit=LEASE_TTL * 4 + 10)
        # Failed clearly, by its owner (Redis back within the lease) or by a sweeper.
        assert end["type"] == "run.error"
        assert end["error"]["code"] in ("store_unavailable", "owner_lost")
        with anyio.fail_after(5):
            while (await client.get(f"{a.http}/healthz")).status_code != 200:
                await anyio.sleep(0.1)
        again = await _start(a, sid, token, "tick")
        assert (await reader.until_run_ends(again))["outcome"] == "success"
    check_protocol(reader.events, first_seq=1)
    assert received > 4
    # Everything the reader had been sent before the crash is still there, in place.
    assert _stored(redis, sid) == reader.events
    assert await _sse_log(a, sid, token, reader.events[-1]["seq"]) == reader.events


async def test_two_processes_appending_to_one_session_get_one_gapless_seq(
        redis_server: RedisServer) -> None:
    sid = "s_shared0000001"
    first, second = SharedLogs(redis_server.url, "p_one"), SharedLogs(redis_server.url, "p_two")
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.serve)
        tg.start_soon(second.serve)
        logs = [first.log_for(sid, 10_000), second.log_for(sid, 10_000)]

        async def append(index: int) -> None:
            for i in range(300):
                logs[index].append(RunStarted(run_id=f"r_{index}_{i:03}", trigger="user"))
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as writers:
            writers.start_soon(append, 0)
            writers.start_soon(append, 1)
        assert await first.flush(5) and await second.flush(5)
        with anyio.fail_after(5):
            for log in logs:
                await log.wait_beyond(599)
        tg.cancel_scope.cancel()
    seen = [[e.to_dict() for e in log.replay()] for log in logs]
    assert seen[0] == seen[1]
    assert [e["seq"] for e in seen[0]] == list(range(1, 601))
    for index in (0, 1):  # each process's events in the order it appended them
        mine = [e["run_id"] for e in seen[0] if e["run_id"].startswith(f"r_{index}_")]
        assert mine == [f"r_{index}_{i:03}" for i in range(300)]
    assert int(first.sync.get(session_key(sid, "seq"))) == 600


def _ag_ui(process: Process, body: dict[str, Any],
           headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """POST /ag-ui; the AG-UI events of the response."""
    with httpx.stream("POST", f"{process.http}/ag-ui", json=body, timeout=20,
                      headers=headers) as response:
        assert response.status_code == 200, response.read()
        blocks = response.read().decode().split("\n\n")
    return [json.loads(b.removeprefix("data: ")) for b in blocks if b.startswith("data: ")]


def test_an_ag_ui_thread_goes_on_on_another_process_and_its_interrupt_resumes_there(
        redis_server: RedisServer, cluster: Any) -> None:
    # A trusted backend with an API key: a thread id of its own, a person's answer relayed.
    a, b = cluster(redis_server, 2, extra={"TOOLPLEX_API_KEY": "k-backend"})
    key = _auth("k-backend")
    thread = {"threadId": "t-shared", "runId": "run-1",
              "messages": [{"id": "u1", "role": "user", "content": "discount please"}]}
    first = _ag_ui(a, thread, key)
    outcome = first[-1]["outcome"]
    assert first[-1]["type"] == "RUN_FINISHED" and outcome["type"] == "interrupt"
    job_id = outcome["interrupts"][0]["id"]
    answer = {**thread, "runId": "run-2", "resume": [
        {"interruptId": job_id, "status": "resolved", "payload": {"approved": True}}]}
    assert httpx.post(f"{b.http}/ag-ui", json=answer).status_code == 401, "no key, no answer"
    resumed = _ag_ui(b, answer, key)
    assert resumed[0]["type"] == "RUN_STARTED" and resumed[-1]["type"] == "RUN_FINISHED"
    assert resumed[-1]["outcome"] == {"type": "success"}
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        sid = client.hget("tp:conversations", "ag-ui:t-shared")
        history = json.loads(client.hget(f"tp:s:{sid}", "history"))
        assert json.loads(client.hget(f"tp:j:{job_id}", "output")) == {"approved": True}
    finally:
        client.close()
    assert [m["role"] for m in history].count("user") == 2  # the request, the job update
    assert history[-1]["content"].startswith("Reported: Job update: approve succeeded.")


async def test_a_batch_retried_after_its_reply_was_lost_is_written_once(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from redis.asyncio.client import Pipeline

    real = Pipeline.execute
    lost = []

    async def execute_then_lose_the_reply(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        appends = any(command[0][0] == "EVALSHA" for command in self.command_stack)
        result = await real(self, *args, **kwargs)
        if appends and not lost:  # the writer's first batch: written, reply lost
            lost.append(result)
            raise redis_exceptions.ConnectionError("connection reset after the write")
        return result

    monkeypatch.setattr(Pipeline, "execute", execute_then_lose_the_reply)
    logs = SharedLogs(redis_server.url, "p_one")
    unreachable: list[bool] = []
    logs.on_unreachable.append(lambda: unreachable.append(True))
    async with anyio.create_task_group() as tg:
        tg.start_soon(logs.serve)
        log = logs.log_for("s_retry", 100)
        for i in range(5):
            log.append(RunStarted(run_id=f"r_{i}", trigger="user"))
        assert await logs.flush(5)
        with anyio.fail_after(5):
            await log.wait_beyond(4)
        tg.cancel_scope.cancel()
    assert lost and logs.writer_ok
    assert unreachable == [], "one reset the retry got past is not an outage"
    stored = _stored(redis_server, "s_retry")
    assert [(e["seq"], e["run_id"]) for e in stored] == [(i + 1, f"r_{i}") for i in range(5)]
    assert [e.seq for e in log.replay()] == [1, 2, 3, 4, 5]


async def test_a_worker_job_outlives_its_process_visibly(
        redis_server: RedisServer, cluster: Any) -> None:
    a, b = cluster(redis_server, 2)
    sid, token = _session(a)
    async with Reader(b, sid, token) as reader:
        asked = await _start(a, sid, token, "crunch")
        await reader.until_run_ends(asked)
        (pending,) = of_type(reader.events, "job.pending")
        os.kill(a.pid, signal.SIGKILL)  # the process running the job's body
        # Another process ends the job within about two lease TTLs, and its turn runs.
        await reader.until(lambda e: e["type"] == "run.started" and e["trigger"] == "job",
                           limit=LEASE_TTL * 4 + 10)
        turn = reader.events[-1]["run_id"]
        await reader.until_run_ends(turn)
        again = await _start(b, sid, token, "tick")  # no second turn holds the session
        assert (await reader.until_run_ends(again))["outcome"] == "success"
    check_protocol(reader.events, first_seq=1)
    (completed,) = of_type(reader.events, "job.completed")
    assert completed["job_id"] == pending["job_id"] and completed["status"] == "failed"
    assert completed["error"]["code"] == "interrupted"
    turns = [e for e in reader.events if e["type"] == "run.started" and e["trigger"] == "job"]
    assert len(turns) == 1, "its completion turn started once"

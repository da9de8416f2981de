"""Crashes and restarts with ``--db``: seq is never reused, every run gets its terminal
event (issue 15). Real uvicorn processes, killed with SIGKILL or stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from toolplex.events import TERMINAL_RUN_TYPES
from toolplex.testing import check_protocol, of_type

from .conftest import Process
from .test_jobs_e2e import SECRET, _signed, hook


@pytest.fixture
def durable(serve_process: Callable[..., Process]) -> Iterator[Callable[..., Process]]:
    """``durable(port=0)``: a server process on one SQLite file (the same across calls)."""
    with tempfile.TemporaryDirectory() as directory:
        env = {"TOOLPLEX_DB": os.path.join(directory, "toolplex.sqlite"),
               "TOOLPLEX_WEBHOOK_SECRET": SECRET}

        def start(port: int = 0) -> Process:
            return serve_process("tests.e2e.apps:durable_app", env, port=port)

        yield start


def _session(process: Process) -> tuple[str, str]:
    body = httpx.post(f"{process.http}/v1/sessions").json()
    return body["session_id"], body["token"]


def _port(process: Process) -> int:
    return int(process.http.rsplit(":", 1)[1])


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(15):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def _read_until(ws: ClientConnection, into: list[dict[str, Any]],
                      done: Callable[[dict[str, Any]], bool]) -> None:
    while True:
        frame = await _recv(ws)
        if "seq" in frame:
            into.append(frame)
            if done(frame):
                return


def _run_end(run_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] in TERMINAL_RUN_TYPES and e["run_id"] == run_id


async def _start(process: Process, sid: str, token: str, text: str) -> str:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{process.http}/v1/sessions/{sid}/runs",
                                   json={"input": text},
                                   headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 202, answer.text
    return answer.json()["run_id"]  # type: ignore[no-any-return]


async def _whole_log(process: Process, sid: str, token: str) -> tuple[list[Any], list[Any]]:
    """Everything a fresh reader (a reloaded page) gets: control frames and events."""
    control: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    async with connect(f"{process.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
        hello = await _recv(ws)
        control.append(hello)
        while not events or events[-1]["seq"] < hello["head_seq"]:
            frame = await _recv(ws)
            (events if "seq" in frame else control).append(frame)
    return control, events


async def test_kill_9_mid_run_then_restart_loses_no_event_and_reuses_no_seq(durable) -> None:
    server = durable()
    sid, token = _session(server)
    url = f"{server.ws}/v1/sessions/{sid}/ws?token={token}"
    seen: list[dict[str, Any]] = []
    async with connect(f"{url}&after=0") as ws:
        assert (await _recv(ws))["type"] == "stream.hello"
        run_id = await _start(server, sid, token, "slow")
        await _read_until(ws, seen, lambda e: e["type"] == "tool.output.delta"
                          and e["index"] == 5)
        os.kill(server.pid, signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            await _read_until(ws, seen, lambda e: False)
    last = seen[-1]["seq"]
    restarted = durable(port=_port(server))
    resumed: list[dict[str, Any]] = []
    async with connect(f"{restarted.ws}/v1/sessions/{sid}/ws?token={token}&after={last}") as ws:
        hello = await _recv(ws)
        assert hello["head_seq"] >= last, "the head never goes back"
        await _read_until(ws, resumed, _run_end(run_id))
        again = await _start(restarted, sid, token, "tick")
        await _read_until(ws, resumed, _run_end(again))
    events = seen + resumed
    check_protocol(events)  # gapless from 1, one terminal event per call and per run
    assert resumed[0]["seq"] == last + 1, "no gap, no duplicate after the cursor"
    end = next(e for e in resumed if e["run_id"] == run_id and e["type"] == "run.error")
    assert end["error"]["code"] == "interrupted"
    interrupted = [e for e in of_type(events, "tool.error") if e["run_id"] == run_id]
    assert [e["error"]["code"] for e in interrupted] == ["interrupted"] * 2, "each open call"
    assert of_type(resumed, "run.finished")[-1]["outcome"] == "success"
    _, reloaded = await _whole_log(restarted, sid, token)
    assert reloaded == events, "a reloaded page gets the whole conversation, as it was sent"


async def test_sigterm_mid_run_ends_it_for_every_reader_before_the_sockets_close(
        durable) -> None:
    server = durable()
    sid, token = _session(server)
    headers = {"authorization": f"Bearer {token}"}
    ws_events: list[dict[str, Any]] = []
    sse_events: list[dict[str, Any]] = []
    post_events: list[dict[str, Any]] = []

    async def sse_reader(started: anyio.Event) -> None:
        async with httpx.AsyncClient(timeout=30) as client, aconnect_sse(
                client, "GET", f"{server.http}/v1/sessions/{sid}/events?after=0",
                headers=headers) as source:
            started.set()
            async for sse in source.aiter_sse():
                frame = json.loads(sse.data)
                if "seq" in frame:
                    sse_events.append(frame)

    async def post_reader() -> None:
        async with httpx.AsyncClient(timeout=30) as client, aconnect_sse(
                client, "POST", f"{server.http}/v1/sessions/{sid}/runs", headers=headers,
                json={"input": "slow"}) as source:
            async for sse in source.aiter_sse():
                post_events.append(json.loads(sse.data))

    async with connect(f"{server.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
        assert (await _recv(ws))["type"] == "stream.hello"
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                sse_started = anyio.Event()
                tg.start_soon(sse_reader, sse_started)
                await sse_started.wait()
                tg.start_soon(post_reader)
                await _read_until(ws, ws_events, lambda e: e["type"] == "tool.output.delta"
                                  and e["index"] == 3)
                os.kill(server.pid, signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    await _read_until(ws, ws_events, lambda e: False)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, "a clean close"
    for events in (ws_events, sse_events, post_events):
        check_protocol(events)
        assert events[-1]["type"] == "run.finished" and events[-1]["outcome"] == "cancelled"
    assert ws_events == sse_events == post_events
    restarted = durable(port=_port(server))
    _, reloaded = await _whole_log(restarted, sid, token)
    assert reloaded == ws_events, "nothing to interrupt: the run ended before the exit"


async def test_kill_9_during_a_job_turn_runs_that_turn_once(durable) -> None:
    server = durable()
    sid, token = _session(server)
    url = f"{server.ws}/v1/sessions/{sid}/ws?token={token}"
    seen: list[dict[str, Any]] = []
    async with connect(f"{url}&after=0") as ws, httpx.AsyncClient() as client:
        assert (await _recv(ws))["type"] == "stream.hello"
        asked = await _start(server, sid, token, "export")
        await _read_until(ws, seen, _run_end(asked))
        job_id = of_type(seen, "job.pending")[0]["job_id"]
        body = json.dumps({"rows": 7}).encode()
        answer = await client.post(hook(server.http, job_id), content=body,
                                   headers=_signed(body))
        assert answer.status_code == 200
        await _read_until(ws, seen, lambda e: e["type"] == "tool.output.delta"
                          and e["index"] == 2)
        os.kill(server.pid, signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            await _read_until(ws, seen, lambda e: False)
    (turn,) = [e for e in seen if e["type"] == "run.started" and e["trigger"] == "job"]
    restarted = durable(port=_port(server))
    resumed: list[dict[str, Any]] = []
    last = seen[-1]["seq"]
    async with connect(f"{restarted.ws}/v1/sessions/{sid}/ws?token={token}&after={last}") as ws:
        await _recv(ws)
        await _read_until(ws, resumed, _run_end(turn["run_id"]))
        # Were the completion delivered again, its turn would hold the session now: refused.
        again = await _start(restarted, sid, token, "tick")
        await _read_until(ws, resumed, _run_end(again))
    events = seen + resumed
    check_protocol(events)
    assert resumed[-1]["outcome"] == "success"
    turns = [e for e in events if e["type"] == "run.started" and e["trigger"] == "job"]
    assert turns == [turn], "the completion turn started once, and was not started again"
    end = next(e for e in resumed if e["run_id"] == turn["run_id"]
               and e["type"] in TERMINAL_RUN_TYPES)
    assert end["type"] == "run.error" and end["error"]["code"] == "interrupted"

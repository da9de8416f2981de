"""SSE and REST routes, against a real uvicorn server with a real SSE parser."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from toolplex import Agent, Settings, tool
from toolplex.events import TERMINAL_RUN_TYPES
from toolplex.testing import Call, ScriptedModel, Step, check_protocol


@tool(reduce=lambda chunks: {"ticks": len(chunks)})
async def ticker(n: int, size: int = 4, pause: float = 0.002):  # type: ignore[no-untyped-def]
    """Stream n ticks of `size` characters."""
    for i in range(n):
        await anyio.sleep(pause)
        yield f"{i:0{size}d}"


def _agent(ticks: int = 20, size: int = 4, pause: float = 0.002) -> Agent:
    args = {"n": ticks, "size": size, "pause": pause}
    model = ScriptedModel([Step(text="Counting.", calls=[Call("ticker", args)]),
                           Step(text="Done.")])
    return Agent(tools=[ticker], model=model)


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _sse_until_run_end(client: httpx.AsyncClient, url: str,
                             headers: dict[str, str]) -> tuple[list[dict[str, Any]], list[Any]]:
    events: list[dict[str, Any]] = []
    raw: list[Any] = []
    with anyio.fail_after(10):
        async with aconnect_sse(client, "GET", url, headers=headers) as source:
            async for sse in source.aiter_sse():
                raw.append(sse)
                frame = json.loads(sse.data)
                if "seq" in frame and not frame["type"].startswith("stream."):
                    assert sse.id == str(frame["seq"]), "id: <seq> on every logged event"
                    events.append(frame)
                if frame["type"] in TERMINAL_RUN_TYPES:
                    break
    return events, raw


async def _run_to_end(served: Any, sid: str, token: str) -> None:
    async with httpx.AsyncClient() as client:
        async with aconnect_sse(client, "POST", f"{served.http}/v1/sessions/{sid}/runs",
                                headers=_auth(token), json={"input": "count"}) as source:
            async for sse in source.aiter_sse():
                if json.loads(sse.data)["type"] in TERMINAL_RUN_TYPES:
                    break


class TestTail:
    async def test_sse_resume_with_last_event_id_matches_the_websocket(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        await _run_to_end(served, sid, token)
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
            ws_events = []
            while True:
                frame = json.loads(await ws.recv())
                if "seq" in frame:
                    ws_events.append(frame)
                if frame["type"] in TERMINAL_RUN_TYPES:
                    break
        url = f"{served.http}/v1/sessions/{sid}/events"
        async with httpx.AsyncClient() as client:
            sse_all, _ = await _sse_until_run_end(client, url, _auth(token))
            cut = sse_all[len(sse_all) // 2]["seq"]
            resumed, raw = await _sse_until_run_end(
                client, url, {**_auth(token), "last-event-id": str(cut)})
            by_query, _ = await _sse_until_run_end(client, f"{url}?after={cut}", _auth(token))
        check_protocol(ws_events)
        assert sse_all == ws_events, "SSE and WebSocket give the same events"
        assert resumed == ws_events[cut:] == by_query, "resume starts at Last-Event-ID + 1"
        hello = json.loads(raw[0].data)
        assert hello["type"] == "stream.hello"
        assert hello["resume_from"] == cut
        assert raw[0].id == "", "the hello is not logged: it carries no id"

    async def test_frames_use_lf_line_endings_and_heartbeat_comments(self, serve) -> None:
        served = serve(_agent(), Settings(heartbeat=0.1))
        sid, token = served.session()
        chunks = b""
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", f"{served.http}/v1/sessions/{sid}/events",
                                     headers=_auth(token)) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                with anyio.move_on_after(0.5):
                    async for chunk in response.aiter_raw():
                        chunks += chunk
        assert b"\r" not in chunks, "LF line endings only"
        assert b"\n: ping" in chunks or chunks.startswith(b": ping"), chunks[:200]

    async def test_old_cursor_gets_gap_then_snapshot(self, serve) -> None:
        served = serve(_agent(ticks=10), Settings(log_retain=8))
        sid, token = served.session()
        await _run_to_end(served, sid, token)
        frames: list[dict[str, Any]] = []
        async with httpx.AsyncClient() as client:
            async with aconnect_sse(client, "GET", f"{served.http}/v1/sessions/{sid}/events",
                                    headers=_auth(token)) as source:
                async for sse in source.aiter_sse():
                    frames.append(json.loads(sse.data))
                    if frames[-1]["type"] in TERMINAL_RUN_TYPES:
                        break
        head = served.hub.store.get(sid).log.head_seq
        assert frames[1] == {"type": "stream.gap", "from_seq": 1, "to_seq": head - 8}
        assert frames[2]["type"] == "stream.snapshot"
        assert [m["role"] for m in frames[2]["messages"]][:2] == ["user", "assistant"]
        assert [f["seq"] for f in frames[3:]] == list(range(head - 7, head + 1))


class TestRuns:
    async def test_post_run_streams_that_run_until_its_terminal_event(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        events = []
        async with httpx.AsyncClient() as client:
            async with aconnect_sse(client, "POST", f"{served.http}/v1/sessions/{sid}/runs",
                                    headers=_auth(token), json={"input": "count"}) as source:
                async for sse in source.aiter_sse():
                    events.append(json.loads(sse.data))
        check_protocol(events)
        assert events[-1]["type"] == "run.finished", "the stream ends with the run"

    async def test_post_run_without_sse_answers_202_with_the_run_id(self, serve) -> None:
        served = serve(_agent(ticks=200))
        sid, token = served.session()
        async with httpx.AsyncClient() as client:
            url = f"{served.http}/v1/sessions/{sid}/runs"
            started = await client.post(url, headers=_auth(token), json={"input": "count"})
            assert started.status_code == 202
            run_id = started.json()["run_id"]
            again = await client.post(url, headers=_auth(token), json={"input": "again"})
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "run_active"
            cancel = await client.post(f"{url}/{run_id}/cancel", headers=_auth(token))
            assert cancel.status_code == 202
            missing = await client.post(f"{url}/r_nope/cancel", headers=_auth(token))
            assert missing.status_code == 404
            call = await client.post(f"{served.http}/v1/sessions/{sid}/calls/c_nope/cancel",
                                     headers=_auth(token))
            assert call.status_code == 404
            bad = await client.post(url, headers=_auth(token), json={"input": 42})
            assert bad.status_code == 422
        run = served.hub.store.get(sid)
        with anyio.fail_after(5):
            while run.runs:
                await anyio.sleep(0.01)
        assert run.log.replay(0)[-1].to_dict()["outcome"] == "cancelled"


class TestTokens:
    @pytest.mark.parametrize(("method", "path"), [
        ("GET", "/v1/sessions/{sid}/events"),
        ("POST", "/v1/sessions/{sid}/runs"),
        ("POST", "/v1/sessions/{sid}/runs/r_1/cancel"),
        ("POST", "/v1/sessions/{sid}/calls/c_1/cancel"),
    ])
    async def test_every_session_route_needs_the_token(self, serve, method: str,
                                                       path: str) -> None:
        served = serve(_agent())
        sid, token = served.session()
        _other_sid, other_token = served.session()
        async with httpx.AsyncClient() as client:
            answers = [
                await client.request(method, served.http + path.format(sid=sid), json={}),
                await client.request(method, served.http + path.format(sid=sid), json={},
                                     headers=_auth("wrong")),
                await client.request(method, served.http + path.format(sid=sid), json={},
                                     headers=_auth(other_token)),
                await client.request(method, served.http + path.format(sid="s_nope"),
                                     json={}, headers=_auth(token)),
            ]
        assert {a.status_code for a in answers} == {401}
        assert len({a.text for a in answers}) == 1, "a refusal reveals nothing"


async def test_healthz_and_metrics(serve) -> None:
    served = serve(_agent())
    sid, token = served.session()
    await _run_to_end(served, sid, token)
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{served.http}/healthz")
        metrics = (await client.get(f"{served.http}/metrics")).text
    assert health.json()["status"] == "ok"
    assert 'toolplex_runs_total{outcome="success"} 1.0' in metrics
    assert 'toolplex_tool_calls_total{outcome="result",tool="ticker"} 1.0' in metrics
    assert "toolplex_events_total" in metrics
    assert "toolplex_readers" in metrics


async def test_a_reader_that_never_reads_hurts_neither_run_nor_memory(serve_process) -> None:
    # The server runs in its own process so that only its memory is measured: 48 MiB
    # per run stream through a reader that never reads while another reader follows live.
    served = serve_process("tests.e2e.apps:firehose_app")
    async with httpx.AsyncClient() as client:
        created = (await client.post(f"{served.http}/v1/sessions")).json()
    sid, token = created["session_id"], created["token"]
    url = f"{served.ws}/v1/sessions/{sid}/ws?token={token}"

    async def follow(run_id: str) -> dict[str, Any]:
        """A live reader: when dropped as slow (4008) it resumes from its seq."""
        cursor = 0
        while True:
            try:
                async with connect(f"{url}&after={cursor}", max_size=None) as live:
                    while True:
                        frame = json.loads(await live.recv())
                        cursor = frame.get("seq", cursor)
                        if frame["type"] in TERMINAL_RUN_TYPES and frame["run_id"] == run_id:
                            return frame
            except ConnectionClosed as exc:
                if exc.rcvd is None or exc.rcvd.code != 4008:
                    raise

    async def run_once() -> None:
        async with connect(f"{url}&after=0", max_queue=1, max_size=None, close_timeout=0.2):
            async with httpx.AsyncClient() as client:
                started = await client.post(f"{served.http}/v1/sessions/{sid}/runs",
                                            headers=_auth(token), json={"input": "go"})
                assert started.status_code == 202
            with anyio.fail_after(60):
                last = await follow(started.json()["run_id"])
            assert last["type"] == "run.finished", "the run completed despite the stalled reader"
            with anyio.fail_after(10):
                while 'kind="disconnected"' not in await metrics():
                    await anyio.sleep(0.05)  # the stalled reader is dropped (4008)

    async def metrics() -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{served.http}/metrics")).text

    for _ in range(2):  # warm up: the log window fills, allocator arenas reach their peak
        await run_once()
    before = served.rss_mib()
    for _ in range(3):
        await run_once()
    grown = served.rss_mib() - before
    # A reader that buffered what it did not read would grow by 144 MiB here.
    assert grown < 40, f"the server grew by {grown:.0f} MiB for 144 MiB through stalled readers"

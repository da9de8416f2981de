"""The WebSocket transport, against a real uvicorn server and the real websockets client."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from toolplex import Agent, Settings, tool
from toolplex.events import TERMINAL_RUN_TYPES
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, of_type


@tool
async def ticker(n: int):  # type: ignore[no-untyped-def]
    """Stream n ticks."""
    for i in range(n):
        await anyio.sleep(0.01)
        yield f"t{i} "


def _agent(ticks: int = 20) -> Agent:
    model = ScriptedModel([Step(text="Counting ticks now.", token_delay=0.005,
                                calls=[Call("ticker", {"n": ticks})]),
                           Step(text="All ticks done.", token_delay=0.005)])
    return Agent(tools=[ticker], model=model)


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def _reply(ws: ClientConnection) -> dict[str, Any]:
    """The next frame answering a command (a cursorless connection also gets the log)."""
    while True:
        frame = await _recv(ws)
        if frame["type"] != "stream.hello" and "seq" not in frame:
            return frame


async def _until_closed(ws: ClientConnection) -> None:
    while True:
        await _recv(ws)


async def _until_run_end(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    while True:
        frame = await _recv(ws)
        if "seq" in frame:
            into.append(frame)
        if frame["type"] in TERMINAL_RUN_TYPES:
            return


class TestRun:
    async def test_a_run_over_websocket_streams_every_event_in_order(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
            await ws.send(json.dumps({"type": "subscribe", "after": 0}))
            hello = await _recv(ws)
            assert hello == {"type": "stream.hello", "session_id": sid, "head_seq": 0,
                             "resume_from": 0}
            await ws.send(json.dumps({"type": "run.start", "input": "count"}))
            events: list[dict[str, Any]] = []
            await _until_run_end(ws, events)
        check_protocol(events)
        assert events[0]["type"] == "run.started"
        assert events[-1]["outcome"] == "success"
        assert len(of_type(events, "tool.output.delta")) == 20

    async def test_token_can_ride_as_a_subprotocol(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?after=0",
                           subprotocols=["toolplex.v1", f"bearer.{token}"]) as ws:
            assert ws.subprotocol == "toolplex.v1"
            assert (await _recv(ws))["type"] == "stream.hello"

    async def test_disconnect_cancels_nothing_and_resubscribe_loses_nothing(
        self, serve
    ) -> None:
        served = serve(_agent(ticks=40))
        sid, token = served.session()
        url = f"{served.ws}/v1/sessions/{sid}/ws?token={token}"
        first: list[dict[str, Any]] = []
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "after": 0}))
            await ws.send(json.dumps({"type": "run.start", "input": "count"}))
            while len(first) < 25:
                frame = await _recv(ws)
                if "seq" in frame:
                    first.append(frame)
        rest: list[dict[str, Any]] = []
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "after": first[-1]["seq"]}))
            # A cursorless connection starts as after=0; the subscribe moves the cursor.
            while (frame := await _recv(ws)).get("resume_from") != first[-1]["seq"]:
                assert frame["type"] != "stream.hello" or frame["resume_from"] == 0
            await _until_run_end(ws, rest)
        events = first + rest
        check_protocol(events)
        assert events[-1]["outcome"] == "success", "the run went on without its reader"
        log = [e.to_dict() for e in served.hub.store.get(sid).log.replay(0)]
        assert events == log, "no gap, no duplicate"

    async def test_two_readers_of_one_session_both_get_every_event(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        url = f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0"
        seen: list[list[dict[str, Any]]] = [[], []]
        async with connect(url) as a, connect(url) as b:
            await _recv(a)
            await _recv(b)
            await a.send(json.dumps({"type": "run.start", "input": "count"}))
            async with anyio.create_task_group() as tg:
                tg.start_soon(_until_run_end, a, seen[0])
                tg.start_soon(_until_run_end, b, seen[1])
        check_protocol(seen[0])
        assert seen[0] == seen[1]

    async def test_second_run_while_one_is_active_is_refused(self, serve) -> None:
        served = serve(_agent(ticks=50))
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
            await ws.send(json.dumps({"type": "run.start", "input": "one"}))
            await ws.send(json.dumps({"type": "run.start", "input": "two", "ref": "r2"}))
            error = await _reply(ws)
        assert error["type"] == "command.error"
        assert error["ref"] == "r2"
        assert error["error"]["code"] == "run_active"

    async def test_an_accepted_run_start_with_a_ref_is_answered_with_its_run_id(
            self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
            await _recv(ws)
            await ws.send(json.dumps({"type": "run.start", "input": "count", "ref": "mine"}))
            frames = []
            while not any(f["type"] == "command.ok" for f in frames) or not any(
                    f["type"] == "run.started" for f in frames):
                frames.append(await _recv(ws))
        (ok,) = [f for f in frames if f["type"] == "command.ok"]
        (started,) = [f for f in frames if f["type"] == "run.started"]
        assert ok == {"type": "command.ok", "ref": "mine", "run_id": started["run_id"]}
        assert "seq" not in ok, "command.ok is not logged"

    async def test_run_cancel_and_tool_cancel_commands(self, serve) -> None:
        served = serve(_agent(ticks=500))
        sid, token = served.session()
        events: list[dict[str, Any]] = []
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
            await _recv(ws)
            await ws.send(json.dumps({"type": "run.start", "input": "count"}))
            while True:
                frame = await _recv(ws)
                events.append(frame)
                if frame["type"] == "tool.output.delta":
                    break
            await ws.send(json.dumps({"type": "tool.cancel", "call_id": frame["call_id"]}))
            await _until_run_end(ws, events)
        check_protocol(events)
        cancelled = of_type(events, "tool.cancelled")[0]
        assert cancelled["reason"] == "user"
        assert cancelled["partial_output"].startswith("t0")


class TestRefusals:
    async def test_wrong_or_missing_token_closes_1008_before_any_event(self, serve) -> None:
        served = serve(_agent())
        sid, _ = served.session()
        for url in (f"{served.ws}/v1/sessions/{sid}/ws?token=nope&after=0",
                    f"{served.ws}/v1/sessions/{sid}/ws?after=0",
                    f"{served.ws}/v1/sessions/s_unknown/ws?token=nope&after=0"):
            async with connect(url) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await _recv(ws)
                assert info.value.rcvd is not None
                assert info.value.rcvd.code == 1008

    async def test_foreign_origin_is_refused_before_accept(self, serve) -> None:
        served = serve(_agent(), Settings(allowed_origins=("https://app.example",)))
        sid, token = served.session()
        url = f"{served.ws}/v1/sessions/{sid}/ws?token={token}"
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 403
        async with connect(url, origin="https://app.example") as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "subscribe"}))
            assert (await _recv(ws))["type"] == "stream.hello"

    async def test_bad_commands_get_command_error_and_the_connection_stays(
        self, serve
    ) -> None:
        served = serve(_agent())
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
            await ws.send("{not json")
            assert (await _reply(ws))["error"]["code"] == "bad_json"
            await ws.send(json.dumps({"type": "launch.missiles"}))
            assert (await _reply(ws))["error"]["code"] == "unknown_command"
            await ws.send(json.dumps({"type": "run.cancel", "ref": "x"}))
            error = await _reply(ws)
            assert error["error"]["code"] == "bad_command"
            assert error["ref"] == "x"
            assert "run_id" in error["error"]["message"]
            await ws.send(json.dumps({"type": "run.cancel", "run_id": "r_nope"}))
            assert (await _reply(ws))["error"]["code"] == "unknown_run"
            await ws.send(json.dumps({"type": "subscribe", "after": 0}))
            assert (await _recv(ws))["type"] == "stream.hello", "still open"

    async def test_two_frames_that_are_not_json_close_the_connection(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
            await ws.send("nope")
            await _reply(ws)
            await ws.send(b"\xff\xfe")
            with pytest.raises(ConnectionClosed) as info:
                await _until_closed(ws)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1007

    async def test_oversized_frame_closes_1009(self, serve) -> None:
        served = serve(_agent(), Settings(max_frame_bytes=64 * 1024))
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}",
                           max_size=None) as ws:
            await ws.send(json.dumps({"type": "run.start", "input": "x" * 100_000}))
            with pytest.raises(ConnectionClosed) as info:
                await _until_closed(ws)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1009

    async def test_server_error_after_accept_closes_1011(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()

        def broken(*args: object) -> dict[str, Any]:
            raise RuntimeError("boom")

        served.hub.execute = broken  # type: ignore[method-assign]
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
            await ws.send(json.dumps({"type": "run.start", "input": "x"}))
            with pytest.raises(ConnectionClosed) as info:
                await _until_closed(ws)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1011


async def test_token_never_appears_in_the_access_log(serve) -> None:
    served = serve(_agent(), access_log=True, log_level="info")
    sid, token = served.session()
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    try:
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
            await _recv(ws)
        async with httpx.AsyncClient() as client:
            await client.post(f"{served.http}/v1/sessions/{sid}/runs?token={token}",
                              json={"input": "count"})
    finally:
        access.removeHandler(handler)
    text = "\n".join(lines)
    assert "token=[redacted]" in text, text
    assert token not in text

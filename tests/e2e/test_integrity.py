"""The event log stays true through bad tool output, early exits and cursorless readers,
seen through the wire (issue 15)."""

from __future__ import annotations

import datetime
import json
import socket
from typing import Any

import anyio
import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import ClientConnection, connect

from toolplex import Agent, Settings, tool
from toolplex.events import TERMINAL_RUN_TYPES
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, of_type


def _strict(text: str) -> dict[str, Any]:
    """Parse as RFC 8259 does: a bare NaN or Infinity is an error."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)  # type: ignore[no-any-return]


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        return _strict(await ws.recv())  # type: ignore[arg-type]


class Opaque:
    pass


@tool
async def report(kind: str):  # type: ignore[no-untyped-def]
    """A tool whose output is not plain JSON."""
    if kind == "opaque":
        return Opaque()
    return {"at": datetime.datetime(2026, 12, 1), "tags": {"x"}, "score": float("nan")}


def _rich_agent() -> Agent:
    model = ScriptedModel([Step(calls=[Call("report", {"kind": "rich"}),
                                       Call("report", {"kind": "opaque"})]),
                           Step(text="Reported.")])
    return Agent(tools=[report], model=model)


class TestBadToolOutput:
    async def test_websocket_and_sse_readers_get_every_event_as_strict_json(self, serve) -> None:
        served = serve(_rich_agent())
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
            assert (await _recv(ws))["type"] == "stream.hello"
            await ws.send(json.dumps({"type": "run.start", "input": "go"}))
            events: list[dict[str, Any]] = []
            while not events or events[-1]["type"] not in TERMINAL_RUN_TYPES:
                events.append(await _recv(ws))
        check_protocol(events)
        assert events[-1]["type"] == "run.finished"
        (result,) = of_type(events, "tool.result")
        assert result["output"] == {"at": "2026-12-01T00:00:00", "tags": ["x"], "score": "NaN"}
        (error,) = of_type(events, "tool.error")
        assert error["error"]["code"] == "unserializable_output"
        assert "Opaque" in error["error"]["message"]
        sse_events: list[dict[str, Any]] = []
        async with httpx.AsyncClient() as client:
            with anyio.fail_after(10):
                async with aconnect_sse(client, "GET", f"{served.http}/v1/sessions/{sid}/events",
                                        headers={"authorization": f"Bearer {token}"}) as source:
                    async for sse in source.aiter_sse():
                        frame = _strict(sse.data)
                        if "seq" in frame:
                            sse_events.append(frame)
                        if frame["type"] in TERMINAL_RUN_TYPES:
                            break
        assert sse_events == events, "the SSE reader reads the same log to its end"


def _two_step_agent() -> Agent:
    return Agent(model=ScriptedModel([Step(text="Hello there.")]))


class TestCursorlessWebSocket:
    async def test_a_connection_without_a_cursor_gets_hello_the_log_and_live_events(
            self, serve) -> None:
        served = serve(_two_step_agent())
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
            hello = await _recv(ws)
            assert hello == {"type": "stream.hello", "session_id": sid, "head_seq": 0,
                             "resume_from": 0}
            await ws.send(json.dumps({"type": "run.start", "input": "hi"}))
            first: list[dict[str, Any]] = []
            while not first or first[-1]["type"] not in TERMINAL_RUN_TYPES:
                first.append(await _recv(ws))
        check_protocol(first)
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
            assert (await _recv(ws))["resume_from"] == 0
            replayed = [await _recv(ws) for _ in first]
        assert replayed == first, "a second cursorless connection replays the retained log"


@tool(retries=0)
async def chunks(n: int, size: int):  # type: ignore[no-untyped-def]
    """Yield n chunks of `size` characters."""
    for i in range(n):
        yield str(i % 10) * size


@tool(retries=0)
async def huge(mib: int):  # type: ignore[no-untyped-def]
    """Yield one chunk of `mib` MiB."""
    yield "x" * (mib << 20)


class TestByteBounds:
    async def test_a_client_with_a_1_mib_frame_limit_reads_everything_after_a_gap(
            self, serve) -> None:
        model = ScriptedModel(scripts={
            "big": [Step(calls=[Call("chunks", {"n": 40, "size": 50_000}),
                                Call("huge", {"mib": 2})]), Step(text="done")],
        }, default=[Step(text="ok")])
        served = serve(Agent(tools=[chunks, huge], model=model),
                       Settings(log_retain=60, reader_queue=5))
        sid, token = served.session()
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=30) as client:
            for text in ("big", "a" * 900_000, "b" * 900_000, "c" * 900_000):
                async with aconnect_sse(client, "POST", f"{served.http}/v1/sessions/{sid}/runs",
                                        headers=headers, json={"input": text}) as source:
                    async for sse in source.aiter_sse():
                        if json.loads(sse.data)["type"] in TERMINAL_RUN_TYPES:
                            break
        log = served.hub.store.get(sid).log
        error = next(e for e in log.replay() if e.type == "tool.error")
        assert error.error["code"] == "output_too_large"  # type: ignore[attr-defined]
        frames: list[dict[str, Any]] = []
        # The common 1 MiB client limit: any larger frame would close the connection 1009.
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0",
                           max_size=1 << 20) as ws:
            hello = await _recv(ws)
            while not frames or frames[-1].get("seq") != hello["head_seq"]:
                frames.append(await _recv(ws))
        assert frames[0]["type"] == "stream.gap"
        parts = [f for f in frames if f["type"] == "stream.snapshot"]
        assert len(parts) > 1 and [p.get("more") for p in parts][-1] is None
        messages = [m for p in parts for m in p["messages"]]
        users = [m["content"] for m in messages if m["role"] == "user"]
        assert users == ["big", "a" * 900_000, "b" * 900_000, "c" * 900_000], "all, whole"
        assert any("from_seq" in f for f in frames), "a lagging reader got deltas merged"


def _established(server_port: int, client_ports: set[int]) -> set[int]:
    """Which of the client ports the server still has an ESTABLISHED TCP connection to
    (read from /proc/net/tcp, as `ss -tn` does)."""
    found = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "01" and int(local.split(":")[1], 16) == server_port:
                port = int(remote.split(":")[1], 16)
                if port in client_ports:
                    found.add(port)
    return found


def _never_reads(port: int, request: bytes) -> socket.socket:
    """A client that sends one request and never reads a byte of the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


async def test_readers_that_stop_reading_are_disconnected_for_real(serve_process) -> None:
    served = serve_process("tests.e2e.apps:firehose_app")  # send_timeout 0.5 s
    port = int(served.http.rsplit(":", 1)[1])
    async with httpx.AsyncClient() as client:
        created = (await client.post(f"{served.http}/v1/sessions")).json()
    sid, token = created["session_id"], created["token"]
    host = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
    body = b'{"input": "go"}'
    socks = [
        _never_reads(port, (f"GET /v1/sessions/{sid}/ws?token={token}&after=0 HTTP/1.1\r\n"
                            f"{host}Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n").encode()),
        _never_reads(port, (f"GET /v1/sessions/{sid}/events?after=0 HTTP/1.1\r\n{host}"
                            "Accept: text/event-stream\r\n\r\n").encode()),
        _never_reads(port, (f"POST /v1/sessions/{sid}/runs HTTP/1.1\r\n{host}"
                            "Accept: text/event-stream\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n").encode() + body),
    ]
    try:
        ports = {s.getsockname()[1] for s in socks}
        with anyio.fail_after(10):
            while _established(port, ports) != ports:  # all three connected and streaming
                await anyio.sleep(0.05)
        # The run streams 48 MiB; none of the three reads: the app drops them, and their
        # sockets must go too, not linger with full buffers.
        with anyio.fail_after(40):
            while _established(port, ports):
                await anyio.sleep(0.2)
    finally:
        for sock in socks:
            sock.close()

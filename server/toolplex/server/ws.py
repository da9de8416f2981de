"""The WebSocket transport: ``stream.hello``, then events; commands in."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import anyio
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..exceptions import ProtocolError
from ..session import Session
from .auth import SUBPROTOCOL, origin_allowed, token_of
from .commands import Subscribe, command_error, parse_command, parse_json
from .hub import Hub
from .readers import SlowReader, batches, hello

logger = logging.getLogger("toolplex.server.ws")

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_BAD_DATA = 1007
CLOSE_SLOW = 4008

_stdlib_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _encode(frame: dict[str, Any]) -> str:
    """A frame's compact UTF-8 JSON, by a C encoder (the stdlib's was a fifth of a
    reader's work per event)."""
    try:
        return orjson.dumps(frame).decode()
    except TypeError:  # (an int beyond 64 bits, a lone surrogate: the stdlib's form)
        return _stdlib_json(frame)


class _Connection:
    def __init__(self, ws: WebSocket, hub: Hub, session: Session) -> None:
        self.ws = ws
        self.hub = hub
        self.session = session
        # Uncontended (the usual case: only command errors compete with the stream), the
        # lock is taken without a checkpoint: one loop pass less per batch sent.
        self.lock = anyio.Lock(fast_acquire=True)
        self.reader: anyio.CancelScope | None = None
        self.bad_frames = 0
        self.scope: anyio.CancelScope | None = None
        """The connection's task group scope, which a stalled send cancels."""
        self.stalled = False
        self._sending_since: float | None = None

    async def send(self, *frames: dict[str, Any]) -> None:
        texts = [_encode(f) for f in frames]
        del frames  # (see finally: a dead frame must hold nothing big)
        try:
            # Uncontended (the usual case), the lock is taken without awaiting: the send
            # that follows is where a cancellation lands.
            try:
                self.lock.acquire_nowait()
            except anyio.WouldBlock:
                await self.lock.acquire()
            try:
                # [readers] a batch that cannot leave within send_timeout marks a stalled
                # reader: the connection's watch task checks the time its send started.
                self._sending_since = time.monotonic()
                for text in texts:
                    await self.ws.send_text(text)
            finally:
                self._sending_since = None
                self.lock.release()
        finally:
            # A cancelled send's frame lives on in its traceback's reference cycle until a
            # full GC collection: it must not keep the batch's text alive with it.
            texts.clear()

    async def watch(self) -> None:
        """Cancel the connection once one send has lasted ``send_timeout``.

        One task per connection, waking once per ``send_timeout`` while idle, rather than
        a deadline per send: a deadline per frame piles timers up in the loop's heap.
        """
        timeout = self.hub.settings.send_timeout
        while True:
            since = self._sending_since
            left = timeout if since is None else since + timeout - time.monotonic()
            if left <= 0:
                self.stalled = True
                if self.scope is not None:
                    self.scope.cancel()
                return
            await anyio.sleep(left)

    def subscribe(self, tg: anyio.abc.TaskGroup, after: int) -> None:
        if self.reader is not None:
            self.reader.cancel()
        scope = self.reader = anyio.CancelScope()
        tg.start_soon(self._read_log, scope, after)

    async def _read_log(self, scope: anyio.CancelScope, after: int) -> None:
        with scope:
            await self.send(hello(self.session, after))
            counters: dict[str, int] = {}
            try:
                async for batch in batches(self.session, after, self.hub.settings,
                                           counters=counters):
                    try:
                        await self.send(*batch)
                    finally:
                        batch.clear()  # (as in send: nothing big left in a dead frame)
            except SlowReader as exc:
                scope.cancel()
                raise _Stop(CLOSE_SLOW, _SLOW) from exc
            finally:
                if counters.get("coalesced"):
                    self.hub.metrics.reader_drops.labels("coalesced").inc(counters["coalesced"])
            if self.session.log.closed:
                raise _Stop(1001, "the session ended")

    async def handle(self, tg: anyio.abc.TaskGroup, message: Mapping[str, Any]) -> None:
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        if len(raw) > self.hub.settings.max_frame_bytes:
            raise _Stop(CLOSE_TOO_BIG, "frame too large")
        ref = None
        try:
            data = parse_json(raw)
            if isinstance(data, dict) and isinstance(data.get("ref"), str):
                ref = data["ref"]
            command = parse_command(data)
            if isinstance(command, Subscribe):
                self.subscribe(tg, await self.hub.cursor(self.session, command.after))
                return
            result = await self.hub.execute(self.session, command)
            if ref is not None:
                # [protocol] an accepted command with a ref is answered command.ok (not logged).
                await self.send({"type": "command.ok", "ref": ref, **result})
        except ProtocolError as exc:
            if exc.code == "bad_json":
                self.bad_frames += 1
                if self.bad_frames >= 2:
                    # [protocol] the connection stays open unless not JSON at all twice.
                    raise _Stop(CLOSE_BAD_DATA, "two frames were not JSON") from None
            await self.send(command_error(exc, ref))


_SLOW = "too slow: reconnect and resume from your last seq"


class _Stop(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def websocket_endpoint(ws: WebSocket) -> None:
    """``GET /v1/sessions/{id}/ws``."""
    hub: Hub = ws.app.state.hub
    if not origin_allowed(ws, hub.settings.origins):
        await ws.close(code=CLOSE_POLICY)  # before accept: the handshake is refused
        return
    session = await hub.store.authorize(ws.path_params["session_id"], token_of(ws))
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    if session is None:
        # [protocol] a wrong token is refused before any event, revealing nothing.
        await ws.close(code=CLOSE_POLICY, reason="unauthorized")
        return
    hub.store.readers[session.id] = hub.store.readers.get(session.id, 0) + 1
    hub.metrics.readers.labels("ws").inc()
    conn = _Connection(ws, hub, session)
    close: tuple[int, str] | None = None
    try:
        async with anyio.create_task_group() as tg:
            conn.scope = tg.cancel_scope
            tg.start_soon(conn.watch)
            # [protocol] no cursor is not silence: stream.hello, the retained log, then
            # live, as after=0 (a later subscribe moves the cursor).
            try:
                conn.subscribe(tg, await hub.cursor(session, ws.query_params.get("after", "0")))
            except ProtocolError as exc:
                # [protocol] the same rule as SSE's 400; the connection stays open for
                # a `subscribe` with a good cursor.
                await conn.send(command_error(exc))
            try:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    await conn.handle(tg, message)
            finally:
                tg.cancel_scope.cancel()
        if conn.stalled:
            close = (CLOSE_SLOW, _SLOW)
    except* _Stop as group:
        stop = group.exceptions[0]
        assert isinstance(stop, _Stop)
        close = (stop.code, stop.reason)
    except* WebSocketDisconnect:
        pass
    except* Exception:
        logger.exception("websocket failed", extra={"session_id": session.id})
        close = (CLOSE_INTERNAL, "internal error")
    finally:
        if close is not None and close[0] == CLOSE_SLOW:
            hub.metrics.reader_drops.labels("disconnected").inc()
        hub.store.leave(session.id)
        hub.metrics.readers.labels("ws").dec()
        session.touch()
    if close is not None:
        with anyio.move_on_after(1), suppress(Exception):
            await ws.close(code=close[0], reason=close[1])


"""Bodies are counted as they arrive and JSON nesting is bounded (a real uvicorn server)."""

from __future__ import annotations

import json
import select
import socket
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from toolplex import Settings

from .test_jobs_e2e import SECRET, _agent, _signed, hook

UPLOAD = 50 << 20
"""What an attacker tries to send: far past the 1 MiB limit."""


def _upload(base: str, path: str, *, declare: bool = False,
            headers: dict[str, str] | None = None) -> tuple[int, int]:
    """POST ``UPLOAD`` bytes to ``path`` on a raw socket, stopping as soon as an answer
    arrives; return the status and how many body bytes had been sent by then.

    ``declare``: send a ``Content-Length`` (and no body until answered) instead of chunks.
    """
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port))
    sock.settimeout(30)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    framing = f"content-length: {UPLOAD}\r\n" if declare else "transfer-encoding: chunked\r\n"
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: {url.netloc}\r\n"
                 f"content-type: application/json\r\n{framing}{extra}\r\n".encode())
    chunk = b"[" * (64 << 10)
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    try:
        while sent < UPLOAD:
            readable, writable, _ = select.select([sock], [] if declare else [sock], [],
                                                  10 if declare else 30)
            if readable or not writable:
                break
            sock.sendall(frame)
            sent += len(chunk)
        if sent >= UPLOAD:
            sock.sendall(b"0\r\n\r\n")
        head = sock.recv(4096)
    finally:
        sock.close()
    assert head.startswith(b"HTTP/1.1 "), head
    return int(head.split()[1]), sent


async def _job(served: Any, text: str) -> tuple[str, str, str]:
    sid, token = served.session()
    async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
        await ws.send(json.dumps({"type": "run.start", "input": text}))
        while True:
            with anyio.fail_after(15):
                frame = json.loads(await ws.recv())
            if frame["type"] == "job.pending":
                return sid, token, frame["job_id"]


class TestBodyLimit:
    async def test_every_body_is_refused_at_the_limit_while_it_is_still_arriving(
        self, serve
    ) -> None:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        sid, token, job_id = await _job(served, "approve 10%")
        bearer = {"authorization": f"Bearer {token}"}
        routes = {"/ag-ui": {}, "/v1/ai-sdk/chat": {}, hook("", job_id): {},
                  f"/v1/jobs/{job_id}/complete": bearer, f"/v1/sessions/{sid}/runs": bearer,
                  "/scripted/v1/chat/completions": {}}
        for path, headers in routes.items():
            status, sent = await anyio.to_thread.run_sync(
                lambda p=path, h=headers: _upload(served.http, p, headers=h))
            assert status == 413, path
            # [limits] the answer came while the upload went on: the server held no more
            # than the limit, whatever the kernel's socket buffers took in meanwhile.
            assert sent < UPLOAD // 2, (path, sent)

    async def test_a_declared_length_past_the_limit_is_refused_before_the_body(
        self, serve
    ) -> None:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        _, _, job_id = await _job(served, "approve 10%")
        for path in ("/ag-ui", "/v1/ai-sdk/chat", hook("", job_id)):
            status, sent = await anyio.to_thread.run_sync(
                lambda p=path: _upload(served.http, p, declare=True))
            assert (status, sent) == (413, 0), path

    async def test_without_credentials_nothing_of_the_body_is_read(self, serve) -> None:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        sid, _ = served.session()
        _, _, job_id = await _job(served, "approve 10%")
        for path in (f"/v1/jobs/{job_id}/complete", f"/v1/sessions/{sid}/runs"):
            status, sent = await anyio.to_thread.run_sync(
                lambda p=path: _upload(served.http, p, declare=True))
            assert (status, sent) == (401, 0), path

    async def test_the_server_process_memory_does_not_grow_with_the_upload(
        self, serve_process
    ) -> None:
        served = serve_process("tests.e2e.apps:plain_app")
        before = served.rss_mib()
        for path in ("/ag-ui", "/v1/ai-sdk/chat"):
            status, _ = await anyio.to_thread.run_sync(lambda p=path: _upload(served.http, p))
            assert status == 413
        assert served.rss_mib() - before < 20, "a refused upload is never held whole"


DEEP = "[" * 100_000 + "]" * 100_000


class TestDepth:
    async def test_deep_nesting_is_a_typed_400_on_every_json_route(self, serve) -> None:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        sid, token, job_id = await _job(served, "approve 10%")
        _, _, export = await _job(served, "export accounts")
        bearer = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        body = '{"input": ' + DEEP + "}"
        async with httpx.AsyncClient(timeout=30) as client:
            answers = {
                "runs": await client.post(f"{served.http}/v1/sessions/{sid}/runs",
                                          content=body, headers=bearer),
                "complete": await client.post(f"{served.http}/v1/jobs/{job_id}/complete",
                                              content='{"output": ' + DEEP + "}",
                                              headers=bearer),
                "webhook": await client.post(hook(served.http, export),
                                             content=DEEP, headers=_signed(DEEP.encode())),
                "ag-ui": await client.post(f"{served.http}/ag-ui", content=DEEP,
                                           headers=bearer),
                "ai-sdk": await client.post(f"{served.http}/v1/ai-sdk/chat", content=DEEP,
                                            headers=bearer),
            }
            for name, answer in answers.items():
                assert answer.status_code == 400, (name, answer.text)
                assert answer.json()["error"]["code"] == "too_deep", name
            # 64 levels are fine.
            ok = await client.post(f"{served.http}/v1/jobs/{job_id}/complete", headers=bearer,
                                   content='{"output": ' + "[" * 63 + "]" * 63 + "}")
            assert ok.status_code == 202, ok.text

    async def test_deep_nesting_over_websocket_is_command_error_and_the_socket_stays(
        self, serve
    ) -> None:
        served = serve(_agent())
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
            with anyio.fail_after(10):
                assert json.loads(await ws.recv())["type"] == "stream.hello"
            await ws.send('{"type": "run.start", "ref": "r1", "input": ' + DEEP + "}")
            with anyio.fail_after(10):
                error = json.loads(await ws.recv())
            assert error["type"] == "command.error"
            assert error["error"]["code"] == "too_deep"
            await ws.send(json.dumps({"type": "subscribe", "after": 0}))
            with anyio.fail_after(10):
                assert json.loads(await ws.recv())["type"] == "stream.hello"

    @pytest.mark.parametrize("body", ["{not json", "[1, 2]", DEEP])
    def test_the_scripted_endpoint_answers_bad_json_with_a_typed_400(
        self, serve, body: str
    ) -> None:
        served = serve(_agent())
        answer = httpx.post(f"{served.http}/scripted/v1/chat/completions", content=body,
                            headers={"content-type": "application/json"}, timeout=30)
        assert answer.status_code == 400
        assert answer.json()["error"]["type"] == "invalid_request_error"


def test_bodies_within_the_limit_still_work(serve) -> None:
    served = serve(_agent(), Settings(max_body_bytes=4096))
    sid, token = served.session()
    bearer = {"authorization": f"Bearer {token}"}
    small = httpx.post(f"{served.http}/v1/sessions/{sid}/runs", json={"input": "export it"},
                       headers=bearer)
    assert small.status_code == 202, small.text
    big = httpx.post(f"{served.http}/v1/sessions/{sid}/runs", json={"input": "x" * 5000},
                     headers=bearer)
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "too_large"


class TestSessions:
    def test_past_max_sessions_creating_one_is_503_with_retry_after(self, serve) -> None:
        served = serve(_agent(), Settings(max_sessions=3))
        for _ in range(3):
            assert httpx.post(f"{served.http}/v1/sessions").status_code == 201
        refused = httpx.post(f"{served.http}/v1/sessions")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "too_many_sessions"
        assert int(refused.headers["retry-after"]) > 0
        adapter = httpx.post(f"{served.http}/v1/ai-sdk/chat", json={
            "id": "c-full", "trigger": "submit-message", "messages": [
                {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]})
        assert adapter.status_code == 503 and "retry-after" in adapter.headers
        assert len(served.hub.store) == 3

    async def test_expired_sessions_are_deleted_from_the_store_and_stay_gone(
            self, tmp_path) -> None:
        import sqlite3
        import time

        from toolplex.server.hub import Hub
        from toolplex.store import Store

        db = str(tmp_path / "toolplex.sqlite")
        settings = Settings(db_path=db, session_idle_ttl=60, max_sessions=2)
        hub = Hub(_agent(), settings)
        old, kept = await hub.create_session(), await hub.create_session()
        old.last_active -= 61
        assert await hub.expire_idle() == [old.id]
        assert [r["id"] for r in Store(db).sessions()] == [kept.id]
        # A session idle past its TTL while the server was down expires at the first sweep
        # after the restart (and does not hold a place under max_sessions meanwhile).
        with sqlite3.connect(db) as raw:
            raw.execute("UPDATE sessions SET updated = ?", (time.time() - 120,))
        again = Hub(_agent(), settings)
        assert [s.id for s in again.store] == [kept.id]
        fresh = [await again.create_session(), await again.create_session()]
        assert {r["id"] for r in Store(db).sessions()} == {s.id for s in fresh}


class TestEdges:
    async def test_a_job_without_its_token_answers_alike_whether_it_exists_or_not(
        self, serve
    ) -> None:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        _, _, job_id = await _job(served, "approve 10%")
        async with httpx.AsyncClient() as client:
            for method, suffix in (("GET", ""), ("POST", "/complete")):
                answers = [await client.request(method, f"{served.http}/v1/jobs/{j}{suffix}",
                                                json={"output": 1})
                           for j in (job_id, "j_000000000000")]
                assert [a.status_code for a in answers] == [401, 401], method
                assert answers[0].json() == answers[1].json()

    @pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "999"])
    async def test_one_cursor_rule_for_sse_and_websocket(self, serve, cursor: str) -> None:
        served = serve(_agent())
        sid, token = served.session()
        async with httpx.AsyncClient() as client:
            for where in ({"params": {"after": cursor}}, {"headers": {"last-event-id": cursor}}):
                sse = await client.get(f"{served.http}/v1/sessions/{sid}/events",
                                       headers={"authorization": f"Bearer {token}",
                                                **where.get("headers", {})},
                                       params=where.get("params"))
                assert sse.status_code == 400, where
                assert sse.json()["error"]["code"] == "bad_cursor"
        url = f"{served.ws}/v1/sessions/{sid}/ws?token={token}"
        async with connect(f"{url}&after={cursor}") as ws:
            with anyio.fail_after(10):
                error = json.loads(await ws.recv())
            assert (error["type"], error["error"]["code"]) == ("command.error", "bad_cursor")
            await ws.send(json.dumps({"type": "subscribe", "after": cursor, "ref": "s1"}))
            with anyio.fail_after(10):
                error = json.loads(await ws.recv())
            assert (error["type"], error["error"]["code"]) == ("command.error", "bad_cursor")
            await ws.send(json.dumps({"type": "subscribe", "after": 0}))  # still open
            with anyio.fail_after(10):
                assert json.loads(await ws.recv())["type"] == "stream.hello"

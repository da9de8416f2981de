"""Who may start work: API keys, cross-site refusals, CORS, trusted hosts, the CLI's
refusal to listen beyond loopback without auth."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from typing import Any

import anyio
import httpx
import pytest
from playwright.async_api import Browser
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from toolplex import Settings

from .conftest import Served
from .test_browser import browser, chromium  # noqa: F401  (fixtures)
from .test_jobs_e2e import _agent

KEY = "k_" + uuid.uuid4().hex


def _ag_ui(thread: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"threadId": thread, "runId": "r1", "state": {}, "tools": [], "context": [],
            "forwardedProps": {}, "messages": [{"id": "m1", "role": "user", "content": text}],
            **extra}


def _chat(chat_id: str, text: str = "hello") -> dict[str, Any]:
    return {"id": chat_id, "trigger": "submit-message", "messages": [
        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}]}


class TestCrossSite:
    """A CORS "simple" request (no preflight) from another site starts nothing."""

    @pytest.mark.parametrize(("path", "body"), [("/ag-ui", _ag_ui("t-cross")),
                                                ("/v1/ai-sdk/chat", _chat("c-cross"))])
    def test_a_foreign_origin_or_a_non_json_body_is_refused_and_runs_nothing(
        self, serve, path: str, body: dict[str, Any]
    ) -> None:
        served = serve(_agent())
        sessions = len(served.hub.store)
        raw = json.dumps(body)
        attempts = {
            "foreign origin": {"origin": "http://evil.example", "content-type": "text/plain"},
            "foreign origin, json": {"origin": "http://evil.example",
                                     "content-type": "application/json"},
            "text/plain": {"content-type": "text/plain"},
            "form": {"content-type": "application/x-www-form-urlencoded"},
            "no type": {},
        }
        for name, headers in attempts.items():
            answer = httpx.post(f"{served.http}{path}", content=raw, headers=headers)
            assert answer.status_code in (403, 415), (name, answer.status_code)
            expected = "forbidden_origin" if "origin" in headers else "unsupported_media"
            assert answer.json()["error"]["code"] == expected, name
        assert len(served.hub.store) == sessions, "no session, no run, no tool"
        # A server or curl (no Origin) with JSON is not refused for that.
        with httpx.stream("POST", f"{served.http}{path}", json=body) as ok:
            assert ok.status_code == 200

    def test_the_server_own_origin_is_not_refused(self, serve) -> None:
        served = serve(_agent())
        answer = httpx.post(f"{served.http}/v1/sessions", headers={"origin": served.http})
        assert answer.status_code == 201


class TestApiKeys:
    def test_every_route_that_starts_work_needs_a_key_or_the_session_token(self, serve) -> None:
        served = serve(_agent(), Settings(api_keys=(KEY,)))
        key = {"authorization": f"Bearer {KEY}"}
        base = served.http
        refused = {
            "session": httpx.post(f"{base}/v1/sessions"),
            "wrong key": httpx.post(f"{base}/v1/sessions", headers={"authorization": "Bearer x"}),
            "ag-ui": httpx.post(f"{base}/ag-ui", json=_ag_ui("t-1")),
            "ai-sdk": httpx.post(f"{base}/v1/ai-sdk/chat", json=_chat("c-1")),
            "ai-sdk resume": httpx.get(f"{base}/v1/ai-sdk/chat/c-1/stream"),
        }
        for name, answer in refused.items():
            assert answer.status_code == 401, name
            assert answer.json()["error"]["code"] == "unauthorized", name
        assert len(served.hub.store) == 0
        created = httpx.post(f"{base}/v1/sessions", headers=key)
        assert created.status_code == 201
        sid, token = created.json()["session_id"], created.json()["token"]
        with httpx.stream("POST", f"{base}/ag-ui", json=_ag_ui("t-1"), headers=key) as ok:
            assert ok.status_code == 200
            assert "RUN_FINISHED" in ok.read().decode()
        # A session's own token opens that session through the adapters too.
        with httpx.stream("POST", f"{base}/v1/ai-sdk/chat", json=_chat(sid),
                          headers={"authorization": f"Bearer {token}"}) as ok:
            assert ok.status_code == 200
            assert '"finish"' in ok.read().decode()

    async def test_the_websocket_takes_the_session_token(self, serve) -> None:
        served = serve(_agent(), Settings(api_keys=(KEY,)))
        async with httpx.AsyncClient() as client:
            created = (await client.post(f"{served.http}/v1/sessions",
                                         headers={"authorization": f"Bearer {KEY}"})).json()
        url = f"{served.ws}/v1/sessions/{created['session_id']}/ws?token={created['token']}"
        async with connect(url + "&after=0") as ws:
            with anyio.fail_after(10):
                assert json.loads(await ws.recv())["type"] == "stream.hello"


class TestAgUiResume:
    def _interrupted(self, served: Served, thread: str,
                     headers: dict[str, str] | None = None) -> str:
        with httpx.stream("POST", f"{served.http}/ag-ui", headers=headers,
                          json=_ag_ui(thread, "approve 10%")) as response:
            text = response.read().decode()
        finished = next(json.loads(line[6:]) for line in text.splitlines()
                        if line.startswith("data: ") and "RUN_FINISHED" in line)
        return str(finished["outcome"]["interrupts"][0]["id"])

    def test_answering_a_human_job_needs_the_session_token(self, serve) -> None:
        served = serve(_agent())
        job_id = self._interrupted(served, "t-approve")
        answer = httpx.post(f"{served.http}/ag-ui", json=_ag_ui("t-approve", resume=[
            {"interruptId": job_id, "status": "resolved", "payload": {"approved": True}}]))
        assert answer.status_code == 401
        assert served.hub.jobs.store.job(job_id)["status"] == "pending"

        sid, token = served.session()
        auth = {"authorization": f"Bearer {token}"}
        job_id = self._interrupted(served, sid, auth)
        with httpx.stream("POST", f"{served.http}/ag-ui", headers=auth, json=_ag_ui(sid, resume=[
                {"interruptId": job_id, "status": "resolved", "payload": {"ok": 1}}])) as ok:
            assert ok.status_code == 200
            ok.read()
        assert served.hub.jobs.store.job(job_id)["status"] == "succeeded"


def _raw_get(served: Served, path: str, host: str) -> int:
    port = int(served.http.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
        return int(sock.recv(1024).split()[1])


class TestTrustedHosts:
    async def test_a_rebound_name_is_refused_on_http_and_websocket(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        port = served.http.rsplit(":", 1)[1]
        assert _raw_get(served, "/healthz", f"127.0.0.1:{port}") == 200
        assert _raw_get(served, "/healthz", f"localhost:{port}") == 200
        assert _raw_get(served, "/healthz", f"evil.example:{port}") == 400
        rebound = f"http://evil.example:{port}"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}",
                               origin=rebound,  # type: ignore[arg-type]
                               additional_headers={"host": f"evil.example:{port}"}):
                pass
        assert refused.value.response.status_code == 400

    def test_the_public_host_is_trusted(self, serve) -> None:
        served = serve(_agent(), Settings(public_url="https://agents.example.com"))
        assert _raw_get(served, "/healthz", "agents.example.com") == 200
        assert _raw_get(served, "/healthz", "other.example.com") == 400


class TestCors:
    def test_a_listed_origin_gets_the_preflight_an_unlisted_one_nothing(self, serve) -> None:
        app = "http://127.0.0.1:3000"
        served = serve(_agent(), Settings(cors_origins=(app,)))
        preflight = {"access-control-request-method": "POST",
                     "access-control-request-headers": "content-type, authorization"}
        listed = httpx.options(f"{served.http}/v1/ai-sdk/chat", headers={"origin": app,
                                                                       **preflight})
        assert listed.status_code == 200
        assert listed.headers["access-control-allow-origin"] == app
        assert "POST" in listed.headers["access-control-allow-methods"]
        unlisted = httpx.options(f"{served.http}/v1/ai-sdk/chat",
                                 headers={"origin": "http://evil.example", **preflight})
        assert not [h for h in unlisted.headers if h.startswith("access-control-")]
        with httpx.stream("POST", f"{served.http}/v1/ai-sdk/chat", json=_chat("c-cors"),
                          headers={"origin": app}) as ok:
            assert ok.status_code == 200
            assert ok.headers["access-control-allow-origin"] == app

    async def test_websocket_origins_follow_the_same_list(self, serve) -> None:
        app = "http://127.0.0.1:3000"
        served = serve(_agent(), Settings(cors_origins=(app,)))
        sid, token = served.session()
        url = f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0"
        async with connect(url, origin=app) as ws:  # type: ignore[arg-type]
            with anyio.fail_after(10):
                assert json.loads(await ws.recv())["type"] == "stream.hello"
        with pytest.raises(InvalidStatus):
            async with connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
                pass

    async def test_a_page_on_another_origin_talks_to_the_api_with_fetch(
        self, serve, browser: Browser  # noqa: F811
    ) -> None:
        # The "frontend": a page on another 127.0.0.1 port (another origin).
        frontend = serve(_agent())
        served = serve(_agent(), Settings(cors_origins=(frontend.http,)))
        tab = await browser.new_page()
        try:
            await tab.goto(frontend.http + "/healthz")
            result = await tab.evaluate("""async (api) => {
                const made = await fetch(api + '/v1/sessions', {method: 'POST'});
                const {session_id, token} = await made.json();
                const chat = await fetch(api + '/v1/ai-sdk/chat', {
                    method: 'POST',
                    headers: {'Content-Type': 'application/json',
                              'Authorization': 'Bearer ' + token},
                    body: JSON.stringify({id: session_id, trigger: 'submit-message',
                        messages: [{id: 'm1', role: 'user',
                                    parts: [{type: 'text', text: 'hello'}]}]})});
                return {status: chat.status, body: await chat.text(),
                        stream: chat.headers.get('x-vercel-ai-ui-message-stream')};
            }""", served.http)
            assert result["status"] == 200
            assert '"type":"finish"' in result["body"].replace(" ", "")
            assert result["stream"] == "v1"
            # The same page against a server that does not list it: the browser blocks it.
            other = serve(_agent())
            blocked = await tab.evaluate("""async (api) => {
                try { await fetch(api + '/v1/ai-sdk/chat', {method: 'POST',
                        headers: {'Content-Type': 'application/json'}, body: '{}'});
                      return 'reached'; }
                catch (e) { return 'blocked: ' + e.name; }
            }""", other.http)
            assert blocked == "blocked: TypeError"
        finally:
            await tab.close()


class TestServeCommand:
    def _serve(self, *args: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TOOLPLEX_")}
        return subprocess.run([sys.executable, "-m", "toolplex.cli", "serve", *args],
                              capture_output=True, text=True, timeout=60,
                              env={**clean, **(env or {})})

    def test_a_public_host_without_auth_is_refused_saying_how(self) -> None:
        refused = self._serve("--host", "0.0.0.0", "--port", "1")
        assert refused.returncode == 2
        for hint in ("--api-key", "TOOLPLEX_API_KEY", "--insecure-no-auth"):
            assert hint in refused.stderr, refused.stderr

    def test_help_documents_every_new_flag_and_variable(self) -> None:
        text = self._serve("--help").stdout
        for name in ("--api-key", "TOOLPLEX_API_KEY", "--insecure-no-auth", "--cors-origin",
                     "TOOLPLEX_CORS_ORIGINS", "--trusted-host", "TOOLPLEX_TRUSTED_HOSTS",
                     "--max-body-bytes", "--max-sessions", "TOOLPLEX_MAX_SESSIONS",
                     "--model-api-key"):
            assert name in text, name

    def test_keys_come_from_flags_or_the_environment(self) -> None:
        from toolplex.cli import settings_from

        settings = settings_from(["--api-key", "a", "--api-key", "b",
                                  "--cors-origin", "http://x.example"], env={})
        assert settings.api_keys == ("a", "b")
        assert settings.cors_origins == ("http://x.example",)
        settings = settings_from([], env={"TOOLPLEX_API_KEY": "a, b",
                                          "TOOLPLEX_CORS_ORIGINS": "http://x.example,http://y"})
        assert settings.api_keys == ("a", "b")
        assert settings.cors_origins == ("http://x.example", "http://y")


class TestTokensInLogs:
    def test_redaction_reads_the_decoded_query(self) -> None:
        from toolplex.server.auth import redact

        for key in ("token", "TOKEN", "ToKeN", "%74oken", "%54%4F%4B%45%4E", "%2574oken"):
            line = f'127.0.0.1:1 - "GET /v1/x?a=1&{key}=s3cret&b=2 HTTP/1.1" 200'
            assert redact(line) == line.replace("s3cret", "[redacted]"), key
        assert redact("/v1/x?tokens=keep&atoken=keep") == "/v1/x?tokens=keep&atoken=keep"

    def test_only_the_documented_spelling_is_accepted(self, serve) -> None:
        served = serve(_agent())
        sid, token = served.session()
        url = f"{served.http}/v1/sessions/{sid}/events"
        for key in ("%74oken", "TOKEN"):
            assert httpx.get(f"{url}?{key}={token}").status_code == 401, key

    async def test_toolplex_serve_logs_no_token_on_any_path(self, toolplex_serve) -> None:
        serving = toolplex_serve()
        base = serving.url
        async with httpx.AsyncClient() as client:
            created = (await client.post(f"{base}/v1/sessions")).json()
            sid, token = created["session_id"], created["token"]
            for key in ("token", "%74oken", "TOKEN", "%54oKeN"):
                await client.get(f"{base}/v1/jobs/j_nope?{key}={token}")
                await client.post(f"{base}/v1/sessions/{sid}/runs?{key}={token}",
                                  json={"input": "hello"})
        for key in ("token", "%74oken"):  # (the second is refused: closed 1008)
            async with connect(f"{base.replace('http', 'ws')}/v1/sessions/{sid}/ws"
                               f"?{key}={token}&after=0") as ws:
                with anyio.fail_after(10), contextlib.suppress(ConnectionClosed):
                    await ws.recv()
        serving.proc.terminate()
        serving.proc.wait(20)
        text = serving.log.read_text()
        assert "[redacted]" in text and '"logger": "uvicorn.access"' in text, text[-2000:]
        assert "WebSocket" in text, "the WebSocket lines were logged too"
        assert token not in text, [line for line in text.splitlines() if token in line]

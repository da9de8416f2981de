"""The ecosystem adapters on a live server: the official clients (client_js/test-adapters/,
node --test with @ag-ui/client and ai), and the HTTP edges of POST /ag-ui and the AI SDK
routes seen from Python."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from toolplex import Agent, tool
from toolplex.server.ai_sdk import PRELIMINARY_INTERVAL
from toolplex.testing import Call, ScriptedModel, Step

from .conftest import Served
from .test_client_live import CLIENT, _node_test


@tool
async def lookup(domain: str) -> dict[str, Any]:
    """Look a domain up."""
    return {"company": "Acme"}


@tool
async def early():  # type: ignore[no-untyped-def]
    """Two chunks at once, then nothing more."""
    yield "e1"
    yield "e2"
    await anyio.sleep_forever()


@tool
async def late():  # type: ignore[no-untyped-def]
    """Two chunks half an interval later, then nothing more."""
    await anyio.sleep(PRELIMINARY_INTERVAL / 2)
    yield "l1"
    yield "l2"
    await anyio.sleep_forever()


def failing_agent() -> Agent:
    """Step 1 reasons, then works; step 2's template names a result that does not exist:
    ``run.error``."""
    model = ScriptedModel([Step(reasoning="The domain needs a lookup.", text="Looking it up. ",
                                calls=[Call("lookup", {"domain": "a.b"})]),
                           Step(text="It is {{lookup.missing}}.")])
    return Agent(tools=[lookup], model=model)


def test_official_clients_run_against_the_real_server(serve: Callable[..., Served]) -> None:
    node = shutil.which("node")
    assert node, "Node 20+ is required for the adapter tests"
    for package in ("@ag-ui/client", "ai"):
        assert (CLIENT / "node_modules" / package).is_dir(), (
            f"the adapter tests need `{package}`: run `npm ci` in client_js (.ci/run does it)")
    demo, failing = serve(), serve(failing_agent())
    env = {**os.environ, "TOOLPLEX_URL": demo.http, "TOOLPLEX_ERROR_URL": failing.http}
    code, out = _node_test(node, "test-adapters/", env, 45)
    assert code == 0, out[-6000:]
    passed = re.search(r"^# pass (\d+)", out, re.MULTILINE)
    skipped = re.search(r"^# skipped (\d+)", out, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 11, out[-6000:]
    assert skipped is None or skipped.group(1) == "0", "a test was skipped:\n" + out[-6000:]


def _ag_ui_body(thread: str, text: str = "search race") -> dict[str, Any]:
    return {"threadId": thread, "runId": "run-1",
            "messages": [{"id": "u1", "role": "user", "content": text}]}


def _chat_body(chat: str, text: str = "search race") -> dict[str, Any]:
    return {"id": chat, "trigger": "submit-message",
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}]}


def _nulls(value: Any) -> bool:
    if isinstance(value, dict):
        return any(v is None or _nulls(v) for v in value.values())
    if isinstance(value, list):
        return any(v is None or _nulls(v) for v in value)
    return False


class TestAgUiEndpoint:
    def test_stream_is_lf_only_camel_case_json_with_integer_timestamps(
        self, serve: Callable[..., Served]
    ) -> None:
        served = serve()
        with httpx.stream("POST", f"{served.http}/ag-ui", json=_ag_ui_body("t-wire"),
                          timeout=20) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            raw = response.read()
        assert b"\r" not in raw, "LF line endings only"
        blocks = raw.decode().split("\n\n")
        assert blocks.pop() == ""
        events = [json.loads(b.removeprefix("data: ")) for b in blocks if not b.startswith(":")]
        assert events[0]["type"] == "RUN_STARTED" and events[-1]["type"] == "RUN_FINISHED"
        for event in events:
            assert isinstance(event["timestamp"], int)
            assert not _nulls(event), event
            assert not [k for k in event if "_" in k], f"camelCase keys: {event}"

    def test_a_second_run_on_a_busy_thread_is_refused(self, serve: Callable[..., Served]) -> None:
        served = serve()
        with httpx.stream("POST", f"{served.http}/ag-ui", json=_ag_ui_body("t-busy"),
                          timeout=20) as first:
            next(first.iter_lines())
            second = httpx.post(f"{served.http}/ag-ui", json=_ag_ui_body("t-busy"), timeout=20)
            assert second.status_code == 409
            assert second.json()["error"]["code"] == "run_active"

    def test_bad_input_and_foreign_sessions_are_refused(self, serve: Callable[..., Served]) -> None:
        served = serve()
        session_id, token = served.session()
        url = f"{served.http}/ag-ui"
        assert httpx.post(url, json={"threadId": "x"}).status_code == 422
        no_user = {**_ag_ui_body("t-x"), "messages": []}
        assert httpx.post(url, json=no_user).json()["error"]["code"] == "bad_input"
        refused = httpx.post(url, json=_ag_ui_body(session_id))
        assert refused.status_code == 401, "a session's thread needs the session's token"
        assert refused.headers["www-authenticate"] == "Bearer", "as the session routes answer"
        with httpx.stream("POST", url, json=_ag_ui_body(session_id, "hello"), timeout=20,
                          headers={"authorization": f"Bearer {token}"}) as response:
            assert response.status_code == 200
            assert b"RUN_FINISHED" in response.read()

    async def test_a_disconnect_cancels_nothing(self, serve: Callable[..., Served]) -> None:
        served = serve()
        async with httpx.AsyncClient(timeout=20) as client:
            async with client.stream("POST", f"{served.http}/ag-ui",
                                     json=_ag_ui_body("t-gone")) as response:
                async for line in response.aiter_lines():
                    if "TOOL_CALL_START" in line:
                        break
        session = next(s for s in served.hub.store if s.log.head_seq)
        with anyio.fail_after(10):
            while session.runs:
                await anyio.sleep(0.02)
        assert [e.to_dict()["outcome"] for e in session.log.replay()
                if e.type == "run.finished"] == ["success"]


class TestAiSdkEndpoints:
    def test_chat_streams_the_ui_message_stream_v1(self, serve: Callable[..., Served]) -> None:
        served = serve()
        with httpx.stream("POST", f"{served.http}/v1/ai-sdk/chat", json=_chat_body("c-wire"),
                          timeout=20) as response:
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            raw = response.read().decode()
        assert "\r" not in raw and raw.endswith("data: [DONE]\n\n")
        parts = [json.loads(b.removeprefix("data: ")) for b in raw.split("\n\n")[:-2]]
        assert parts[0]["type"] == "start" and parts[-1]["type"] == "finish"
        assert any(p.get("preliminary") for p in parts), "streaming output is shown as it comes"

    def test_resume_is_204_when_nothing_runs(self, serve: Callable[..., Served]) -> None:
        served = serve()
        response = httpx.get(f"{served.http}/v1/ai-sdk/chat/unknown/stream")
        assert response.status_code == 204
        session_id, _ = served.session()
        refused = httpx.get(f"{served.http}/v1/ai-sdk/chat/{session_id}/stream")
        assert refused.status_code == 401

    def test_a_second_message_while_running_is_refused(self, serve: Callable[..., Served]) -> None:
        served = serve()
        url = f"{served.http}/v1/ai-sdk/chat"
        with httpx.stream("POST", url, json=_chat_body("c-busy"), timeout=20) as first:
            next(first.iter_lines())
            assert httpx.post(url, json=_chat_body("c-busy")).status_code == 409
        assert httpx.post(url, json={"id": "c", "messages": []}).status_code == 422

    def test_held_back_snapshots_each_go_when_due_while_the_log_is_idle(
        self, serve: Callable[..., Served]
    ) -> None:
        model = ScriptedModel([Step(calls=[Call("early"), Call("late")])])
        served = serve(Agent(tools=[early, late], model=model))
        shown: dict[str, list[str]] = {}
        with httpx.stream("POST", f"{served.http}/v1/ai-sdk/chat", json=_chat_body("c-due"),
                          timeout=5) as response:
            for line in response.iter_lines():
                part = json.loads(line.removeprefix("data: ")) if line.startswith("data: {") else {}
                if part.get("preliminary"):
                    shown[part["output"][0]] = part["output"]
                if shown == {"e1": ["e1", "e2"], "l1": ["l1", "l2"]}:
                    break
        # Both tools hang after their second chunk: no later event can carry the snapshots.
        assert shown == {"e1": ["e1", "e2"], "l1": ["l1", "l2"]}, (
            "each call's last chunks are shown when its interval has passed")

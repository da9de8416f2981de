"""Real models over real HTTP: the Responses API end to end, and ``serve --api responses``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
from httpx_sse import connect_sse

from toolplex import Agent, tool
from toolplex.providers import OpenAIResponsesModel
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


async def test_a_responses_model_over_http_runs_its_calls_and_streams_reasoning(serve) -> None:
    script = [Step(reasoning="Two lookups.", calls=[Call("double", {"n": 2}),
                                                    Call("double", {"n": 5})]),
              Step(text="Got {{double}}.")]
    remote = ScriptedModel(script, dialect="responses")
    served = serve(Agent(model=remote))
    seen: list[int] = []

    @tool
    async def double(n: int) -> int:
        """Twice n."""
        seen.append(n)
        return 2 * n

    model = OpenAIResponsesModel("scripted", base_url=f"{served.http}/scripted/v1",
                                 api_key="unused")
    events = await collect(Agent(tools=[double], model=model), "double 2 and 5")
    await model.aclose()
    check_protocol(events)
    assert events[-1]["type"] == "run.finished"
    assert sorted(seen) == [2, 5]
    assert "".join(e["delta"] for e in of_type(events, "reasoning.delta")) == "Two lookups."
    replay = remote.requests[1]["input"]
    assert [i["type"] for i in replay if "type" in i] == [
        "function_call", "function_call", "function_call_output", "function_call_output"]


def test_serve_api_responses_from_the_environment_talks_responses(serve) -> None:
    remote = ScriptedModel(dialect="responses")
    served = serve(Agent(model=remote))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "TOOLPLEX_API": "responses", "TOOLPLEX_MODEL": "remote-scripted",
           "OPENAI_BASE_URL": f"{served.http}/scripted/v1", "OPENAI_API_KEY": "unused"}
    proc = subprocess.Popen([sys.executable, "-m", "toolplex.cli", "serve", "--port", str(port),
                             "--db", ":memory:", "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    events: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=10) as client:
            while True:
                try:
                    client.get(f"{base}/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and proc.poll() is None, "no server"
                    time.sleep(0.05)
            session = client.post(f"{base}/v1/sessions").json()
            with connect_sse(client, "POST", f"{base}/v1/sessions/{session['session_id']}/runs",
                             json={"input": "hello"},
                             headers={"Authorization": f"Bearer {session['token']}"}) as source:
                events += [json.loads(sse.data) for sse in source.iter_sse()]
    finally:
        proc.terminate()
        proc.wait(10)
    assert events[-1]["type"] == "run.finished", events[-1]
    text = "".join(e["delta"] for e in events if e["type"] == "text.delta")
    assert text == "Hello from toolplex."
    assert "input" in remote.requests[-1], "the server sent a Responses request"
    assert "messages" not in remote.requests[-1]

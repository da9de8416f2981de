"""Operations: the scripted model on a port, graceful shutdown, logs, the CLI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import anyio
import openai
from websockets.asyncio.client import connect

from toolplex import Agent, tool
from toolplex.server.logs import JSONFormatter
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, of_type

from .conftest import serving


async def test_the_scripted_model_serves_any_openai_client_on_the_port(serve) -> None:
    model = ScriptedModel([Step(text="Hi from the script.", calls=[Call("lookup", {"q": 1})])])
    served = serve(Agent(model=model))
    client = openai.AsyncOpenAI(base_url=f"{served.http}/scripted/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model="scripted", stream=True, messages=[{"role": "user", "content": "hello"}])
    text, calls, finish = "", [], None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls += [c.function.name for c in choice.delta.tool_calls or [] if c.function.name]
            finish = choice.finish_reason or finish
    assert (text, calls, finish) == ("Hi from the script.", ["lookup"], "tool_calls")
    await client.close()


async def test_shutdown_cancels_running_runs_cleanly() -> None:
    started = anyio.Event()

    @tool
    async def forever() -> str:
        started.set()
        await anyio.sleep_forever()
        return "never"

    agent = Agent(tools=[forever], model=ScriptedModel([Step(calls=[Call("forever")])]))
    from toolplex import create_app

    app = create_app(agent)
    with serving(app) as served:
        sid, token = served.session()
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}") as ws:
            await ws.send(json.dumps({"type": "run.start", "input": "go"}))
            with anyio.fail_after(5):
                await started.wait()
    events = [e.to_dict() for e in served.hub.store.get(sid).log.replay(0)]
    check_protocol(events)
    assert of_type(events, "tool.cancelled")[0]["reason"] == "run_cancelled"
    assert events[-1]["type"] == "run.finished" and events[-1]["outcome"] == "cancelled"


def test_json_logs_carry_the_ids() -> None:
    record = logging.LogRecord("toolplex.server", logging.INFO, __file__, 1, "run started",
                               None, None)
    record.session_id, record.run_id = "s_1", "r_1"
    line = json.loads(JSONFormatter().format(record))
    assert line["msg"] == "run started" and line["level"] == "info"
    assert (line["session_id"], line["run_id"]) == ("s_1", "r_1")
    assert "call_id" not in line, "absent ids are omitted"


def test_serve_help_explains_the_options_and_their_environment() -> None:
    done = subprocess.run([sys.executable, "-m", "toolplex.cli", "serve", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for needle in ("--host", "--port", "--model", "--base-url", "OPENAI_API_KEY",
                   "OPENAI_BASE_URL", "TOOLPLEX_WEBHOOK_SECRET", "--db"):
        assert needle in done.stdout, needle

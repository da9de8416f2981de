"""MCP servers nobody here wrote, started by the tests: the protocol's reference server
(`@modelcontextprotocol/server-everything`, from npm, over stdio) and a server built on the
`mcp` SDK (tests/mcp_servers/server.py, over streamable HTTP and stdio)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from playwright.async_api import Browser, expect
from websockets.asyncio.client import connect

from toolplex import Agent, Backoff, Session, tool
from toolplex.jobs import JobManager
from toolplex.mcp import MCPServer
from toolplex.store import Store
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, of_type

from .test_browser import WAIT_MS, Demo, browser, chromium  # noqa: F401 - fixtures

HERE = Path(__file__).resolve().parents[1] / "mcp_servers"
EVERYTHING = HERE / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
SERVER = HERE / "server.py"


class HTTPServer:
    """tests/mcp_servers/server.py over streamable HTTP, in its own process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "http"],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.base}/events", timeout=0.5)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the test MCP server did not start") from None
                time.sleep(0.05)

    def events(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base}/events").json()  # type: ignore[no-any-return]

    def post(self, path: str, body: dict[str, Any]) -> None:
        httpx.post(f"{self.base}{path}", json=body).raise_for_status()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def mcp_http() -> Iterator[HTTPServer]:
    server = HTTPServer()
    try:
        yield server
    finally:
        server.stop()


def everything(**options: Any) -> MCPServer:
    assert EVERYTHING.exists(), "run `(cd tests/mcp_servers && npm ci)` (the README's test command)"
    return MCPServer.stdio("node", [str(EVERYTHING), "stdio"], **options)


def _devnull() -> Any:
    return open(os.devnull, "w")


async def _run(agent: Agent, calls: list[Call], session: Session | None = None,
               **kw: Any) -> list[dict[str, Any]]:
    agent.model = ScriptedModel([Step(calls=calls), Step(text="done")])
    events = [e.to_dict() async for e in agent.run("go", session=session, **kw)]
    check_protocol(events)
    return events


def _of_call(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    starts = [e["call_id"] for e in events if e["type"] == "tool.call.start" and e["name"] == name]
    return [e for e in events if e.get("call_id") in starts]


def _terminal(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in events if e["type"] in ("tool.result", "tool.error", "tool.cancelled"))


async def _until(predicate: Any, what: str) -> None:
    with anyio.fail_after(15):
        while not predicate():
            await anyio.sleep(0.02)


# -- the reference server over stdio --------------------------------------------------


async def test_reference_server_tools_are_listed_and_their_results_shaped() -> None:
    agent = Agent(tools=[everything(prefix="ev")])
    try:
        events = await _run(agent, [
            Call("ev__echo", {"message": "hi"}),
            Call("ev__get-sum", {"a": 2, "b": 3}),
            Call("ev__get-structured-content", {"location": "Chicago"}),
            Call("ev__get-tiny-image", {}),
            Call("ev__get-sum", {"a": "two"}),
        ])
        names = agent.tool_names()
        for name in ("echo", "get-sum", "get-structured-content", "trigger-long-running-operation"):
            assert f"ev__{name}" in names
        sum_tool = agent.tool_for("ev__get-sum", agent.session())
        assert sum_tool is not None and not sum_tool.side_effects, "readOnlyHint: a read"
        assert sum_tool.parameters["required"] == ["a", "b"], "inputSchema as the server gave it"
    finally:
        await agent.aclose()
    echo, total, weather, image, bad = (
        _terminal([e for e in events if e.get("call_id") == start["call_id"]])
        for start in of_type(events, "tool.call.start"))
    assert echo["output"] == "Echo: hi"
    assert total["output"] == "The sum of 2 and 3 is 5."
    assert weather["output"] == {"temperature": 36, "conditions": "Light rain / drizzle",
                                 "humidity": 82}, "structuredContent wins over the text"
    assert isinstance(image["output"], list)
    assert {b["type"] for b in image["output"]} >= {"image"}
    assert next(b for b in image["output"] if b["type"] == "image")["mimeType"] == "image/png"
    assert bad["type"] == "tool.error" and bad["error"]["code"] == "invalid_args"
    assert "a: 'two' is not of type 'number'" in bad["error"]["message"], \
        "validated against inputSchema before the server sees it"


async def test_three_parallel_long_operations_keep_their_progress_apart() -> None:
    agent = Agent(tools=[everything()])
    try:
        events = await _run(agent, [
            Call("trigger-long-running-operation", {"duration": 0.4, "steps": steps})
            for steps in (2, 3, 4)])
    finally:
        await agent.aclose()
    starts = of_type(events, "tool.call.start")
    for start, steps in zip(starts, (2, 3, 4), strict=True):
        mine = [e for e in events if e.get("call_id") == start["call_id"]]
        deltas = of_type(mine, "tool.output.delta")
        progress = [d["data"] for d in deltas if isinstance(d["data"], dict)]
        assert progress == [{"progress": float(i), "total": float(steps)}
                            for i in range(1, steps + 1)], "each call gets its own progress"
        assert [d["index"] for d in deltas] == list(range(len(deltas)))
        result = _terminal(mine)
        assert result["type"] == "tool.result"
        assert f"Steps: {steps}." in result["output"]
        order = [e["type"] for e in mine]
        assert order.index("tool.result") > max(
            i for i, t in enumerate(order) if t == "tool.output.delta") - 1


def test_the_example_prints_progress_as_it_comes() -> None:
    example = Path(__file__).resolve().parents[2] / "examples/mcp_agent.py"
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    progress = [line for line in lines if "progress" in line]
    assert progress == [f"  ev__trigger-long-running-operation: progress {i}/4"
                        for i in range(1, 5)]
    assert lines.index(progress[-1]) < next(
        i for i, line in enumerate(lines) if "Long running operation completed" in line)
    assert "[success]" in lines


# -- the SDK server over streamable HTTP ----------------------------------------------


async def test_progress_reaches_the_stream_while_the_call_runs(mcp_http: HTTPServer) -> None:
    agent = Agent(tools=[MCPServer.http(mcp_http.url, prefix="t")])
    agent.model = ScriptedModel([Step(calls=[Call("t__gated", {"key": "k1"})]), Step(text="ok")])
    seen: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(30):
            async for event in agent.run("go"):
                seen.append(event.to_dict())
                deltas = of_type(seen, "tool.output.delta")
                if event.type == "tool.output.delta" and len(deltas) == 1:
                    # The server is still waiting: this progress cannot be a replay at its end.
                    assert not of_type(seen, "tool.result")
                    assert seen[-1]["data"] == {"progress": 1.0, "total": 2.0,
                                                "message": "waiting for k1"}
                    await anyio.to_thread.run_sync(mcp_http.post, "/open", {"key": "k1"})
    finally:
        await agent.aclose()
    check_protocol(seen)
    assert [d["data"] for d in of_type(seen, "tool.output.delta")][1] == {
        "progress": 2.0, "total": 2.0, "message": "opened"}
    assert of_type(seen, "tool.result")[0]["output"] == {"result": "k1 opened"}


async def test_progress_restarts_the_idle_timeout_a_silent_call_times_out(
        mcp_http: HTTPServer) -> None:
    server = MCPServer.http(mcp_http.url, prefix="t", timeout=2.0, retries=0)
    agent = Agent(tools=[server])
    try:
        events = await _run(agent, [Call("t__slow", {"steps": 8, "delay": 0.4}),
                                    Call("t__hang", {"label": "silent"})])
    finally:
        await agent.aclose()
    slow, hang = _of_call(events, "t__slow"), _of_call(events, "t__hang")
    assert _terminal(slow)["output"] == {"result": "slow done after 8 steps"}, \
        "3.2 s of work with progress every 0.4 s outlives a 2 s timeout"
    assert of_type(hang, "tool.timeout")[0]["timeout_ms"] == 2000
    assert _terminal(hang)["error"]["code"] == "timeout"


async def test_a_timeout_sends_notifications_cancelled(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    server = MCPServer.stdio(sys.executable, [str(SERVER), "stdio"], prefix="s", retries=0,
                             env={"MCP_TEST_EVENTS": str(log)},
                             tool_options={"hang": {"timeout": 0.5}})

    def seen() -> list[dict[str, Any]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(line) for line in lines]

    def told() -> list[str]:
        started = [e["request"] for e in seen() if e["event"] == "started"]
        return [e["event"] for e in seen() if e.get("request") in started
                or e["event"] == "cancelled"]

    agent = Agent(tools=[server])
    try:
        events = await _run(agent, [Call("s__hang", {"label": "timeout"})])
        assert of_type(events, "tool.timeout")[0]["timeout_ms"] == 500
        assert _terminal(events)["error"]["code"] == "timeout"
        await _until(lambda: len(told()) == 3, "the server was told")
    finally:
        await agent.aclose()
    # The SDK stops the handler as the notification arrives, then hands it to handlers.
    assert told() == ["started", "cancelled", "notifications/cancelled"]


def _stdio_server(log: Path, **options: Any) -> MCPServer:
    return MCPServer.stdio(sys.executable, [str(SERVER), "stdio"], prefix="s", retries=0,
                           env={"MCP_TEST_EVENTS": str(log)}, **options)


def _seen(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line) for line in lines]


async def test_a_run_cancel_sends_notifications_cancelled(tmp_path: Path) -> None:
    """Cancelling the run, not the call, stops the server-side handler too."""
    log = tmp_path / "events.jsonl"
    agent = Agent(tools=[_stdio_server(log)])
    session = agent.session()
    agent.model = ScriptedModel([Step(calls=[Call("s__hang", {"label": "run"})]),
                                 Step(text="never asked")])
    seen: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(30):
            async for event in agent.run("go", session=session):
                seen.append(event.to_dict())
                if event.type == "tool.exec.started":
                    await _until(lambda: any(e["event"] == "started" for e in _seen(log)),
                                 "the hang started")
                    next(iter(session.runs.values())).cancel()
        await _until(lambda: any(e["event"] == "notifications/cancelled" for e in _seen(log)),
                     "the server was told")
    finally:
        await agent.aclose()
    check_protocol(seen)
    assert of_type(seen, "tool.cancelled")[0]["reason"] == "run_cancelled"
    assert seen[-1]["type"] == "run.finished" and seen[-1]["outcome"] == "cancelled"
    started = next(e["request"] for e in _seen(log) if e["event"] == "started")
    assert [e for e in _seen(log) if e.get("request", started) == started] == [
        {"event": "started", "label": "run", "request": started},
        {"event": "cancelled", "label": "run"},
        {"event": "notifications/cancelled", "request": started}]


async def test_progress_after_a_calls_terminal_event_is_dropped(tmp_path: Path) -> None:
    """A server that keeps reporting progress for a cancelled call: none of it reaches the
    log after the call's terminal event (today the SDK already drops it once the request
    is gone; toolplex's queue would drop it too), and the connection serves the next call."""
    log = tmp_path / "events.jsonl"
    agent = Agent(tools=[_stdio_server(log)])
    session = agent.session()
    agent.model = ScriptedModel([Step(calls=[Call("s__stubborn", {})]),
                                 Step(calls=[Call("s__slow", {"steps": 2, "delay": 0.01})]),
                                 Step(text="done")])
    seen: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(30):
            async for event in agent.run("go", session=session):
                seen.append(event.to_dict())
                if event.type == "tool.output.delta" and len(of_type(seen, "tool.call.start")) == 1:
                    session.calls[event.call_id].cancel("user")  # type: ignore[attr-defined]
                if event.type == "tool.cancelled":
                    # The server keeps reporting progress for the call it was told to stop.
                    await _until(lambda: len([e for e in _seen(log)
                                              if e["event"] == "late progress"]) == 3,
                                 "the late progress was sent")
    finally:
        await agent.aclose()
    check_protocol(seen)
    logged = [e.to_dict() for e in session.log.replay()]
    assert logged == seen
    stubborn = _of_call(logged, "s__stubborn")
    assert stubborn[-1]["type"] == "tool.cancelled" and stubborn[-1]["reason"] == "user"
    assert [e["data"] for e in of_type(stubborn, "tool.output.delta")] == [
        {"progress": 1, "total": 10, "message": "working"}]
    # The connection still serves the next call, whose progress arrives as usual.
    slow = _of_call(logged, "s__slow")
    assert [e["data"] for e in of_type(slow, "tool.output.delta")] == [
        {"progress": 1, "total": 2, "message": "step 1 of 2"},
        {"progress": 2, "total": 2, "message": "step 2 of 2"},
        {"result": "slow done after 2 steps"}]
    assert slow[-1]["type"] == "tool.result"
    assert seen[-1]["outcome"] == "success"


async def test_a_timeout_over_http_closes_the_request_stream(mcp_http: HTTPServer) -> None:
    agent = Agent(tools=[MCPServer.http(mcp_http.url, prefix="t", retries=0,
                                        tool_options={"hang": {"timeout": 0.5}})])
    try:
        events = await _run(agent, [Call("t__hang", {"label": "timeout"})])
        assert _terminal(events)["error"]["code"] == "timeout"
        await _until(lambda: any(e["event"] == "cancelled" for e in mcp_http.events()),
                     "the server stopped the handler")
    finally:
        await agent.aclose()
    assert [e["event"] for e in mcp_http.events()] == ["started", "cancelled"]


async def test_tool_cancel_and_short_circuit_cancel_the_server_side_call(
        mcp_http: HTTPServer) -> None:
    server = MCPServer.http(mcp_http.url, prefix="t", tool_options={
        "gated": {"decisive": lambda chunk: chunk.get("message") == "opened"}})
    agent = Agent(tools=[server])
    session = agent.session()
    agent.model = ScriptedModel([Step(calls=[Call("t__hang", {"label": "user"})]),
                                 Step(calls=[Call("t__hang", {"label": "sibling"}),
                                             Call("t__gated", {"key": "k2"})]),
                                 Step(text="ok")])
    seen: list[dict[str, Any]] = []

    def started(label: str) -> bool:
        return any(e.get("label") == label for e in mcp_http.events())

    try:
        with anyio.fail_after(30):
            async for event in agent.run("go", session=session):
                seen.append(event.to_dict())
                names = {e["call_id"]: e["name"] for e in of_type(seen, "tool.call.start")}
                execs = of_type(seen, "tool.exec.started")
                if event.type == "tool.exec.started" and len(execs) == 1:
                    await _until(lambda: started("user"), "the first hang started")
                    session.calls[seen[-1]["call_id"]].cancel("user")
                if (event.type == "tool.output.delta" and names[seen[-1]["call_id"]] == "t__gated"
                        and seen[-1]["index"] == 0):
                    await _until(lambda: started("sibling"), "the sibling started")
                    await anyio.to_thread.run_sync(mcp_http.post, "/open", {"key": "k2"})
        await _until(lambda: len([e for e in mcp_http.events()
                                  if e["event"] == "cancelled"]) == 2, "both cancels")
    finally:
        await agent.aclose()
    check_protocol(seen)
    assert [e["reason"] for e in of_type(seen, "tool.cancelled")] == ["user", "short_circuit"]
    cancelled = [e for e in mcp_http.events() if e["event"] == "cancelled"]
    assert sorted(e["label"] for e in cancelled) == ["sibling", "user"]


async def test_is_error_and_invalid_params_are_permanent(mcp_http: HTTPServer) -> None:
    agent = Agent(tools=[MCPServer.http(mcp_http.url, prefix="t")])
    try:
        events = await _run(agent, [Call("t__fail", {"reason": "the quota is spent"}),
                                    Call("t__strict", {"n": "x"})])
    finally:
        await agent.aclose()
    fail, strict = _of_call(events, "t__fail"), _of_call(events, "t__strict")
    assert _terminal(fail)["error"] == {
        "code": "tool_error", "message": "Error executing tool fail: the quota is spent"}
    assert _terminal(strict)["error"]["code"] == "invalid_args"
    assert "n must be an integer" in _terminal(strict)["error"]["message"]
    for call in (fail, strict):
        assert len(of_type(call, "tool.exec.started")) == 1, "never retried"
        assert not of_type(call, "tool.retrying")


async def test_tools_are_listed_again_on_list_changed(mcp_http: HTTPServer) -> None:
    server = MCPServer.http(mcp_http.url, prefix="t")

    @tool
    async def until_listed_changed() -> bool:
        """Beside `grow` in its step: the next step starts once the notification came (it
        travels on its own stream, not with `grow`'s result)."""
        await _until(lambda: server._stale, "tools/list_changed arrived")
        return True

    agent = Agent(tools=[server, until_listed_changed])
    agent.model = ScriptedModel([
        Step(calls=[Call("t__grow", {}), Call("until_listed_changed", {})]),
        Step(calls=[Call("t__grown", {})]), Step(text="ok")])
    try:
        assert "t__grown" not in [t.name for t in await server.list_tools()]
        events = [e.to_dict() async for e in agent.run("go")]
    finally:
        await agent.aclose()
    check_protocol(events)
    assert _terminal(_of_call(events, "t__grown"))["output"] == "grown here"


async def test_a_server_that_cannot_start_fails_its_calls_never_the_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    starts = tmp_path / "starts"
    script = f"open({str(starts)!r}, 'a').write('x\\n')"
    broken = MCPServer.stdio(sys.executable, ["-c", script], prefix="bad", retries=0,
                             reconnect=Backoff(base=3600))
    agent = Agent(tools=[broken, everything(prefix="ev")])
    caplog.set_level(logging.WARNING, "toolplex.mcp")
    try:
        first = await _run(agent, [Call("bad__anything", {}), Call("ev__echo", {"message": "a"})])
        second = await _run(agent, [Call("bad__anything", {})])
    finally:
        await agent.aclose()
    for events in (first, second):
        assert of_type(events, "run.finished")[0]["outcome"] == "success"
        error = _terminal(_of_call(events, "bad__anything"))["error"]
        assert "the MCP server bad could not start" in error["message"]
    assert _terminal(_of_call(first, "ev__echo"))["output"] == "Echo: a", "the others work"
    assert "MCP server bad could not start" in caplog.text
    assert starts.read_text() == "x\n", "tried again only after the reconnect delay"


async def test_a_stdio_child_that_exits_is_reconnected() -> None:
    server = MCPServer.stdio(sys.executable, [str(SERVER), "stdio"], prefix="s", retries=0)
    agent = Agent(tools=[server])
    try:
        events = await _run(agent, [Call("s__pid", {})])
        before = _terminal(events)["output"]
        crashed = await _run(agent, [Call("s__crash", {})])
        error = _terminal(crashed)["error"]
        after = _terminal(await _run(agent, [Call("s__pid", {})]))["output"]
    finally:
        await agent.aclose()
    assert error["code"] == "upstream" and "went away" in error["message"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert before["result"] != after["result"], "a new child answered"
    assert server.connects == 2


# -- long work becomes a job ------------------------------------------------------------


def _job_agent(mcp_http: HTTPServer, call: Call) -> tuple[Agent, Session]:
    """An agent making one call whose job's completion the session gets as a new turn."""
    agent = Agent(tools=[MCPServer.http(mcp_http.url, prefix="t")])
    session = agent.session()
    agent.jobs.attach(session)
    agent.model = ScriptedModel(scripts={
        "job update": [Step(text="Reported: {{input}}")],
        "go": [Step(calls=[call]), Step(text="Asked.")]})
    return agent, session


async def test_a_task_becomes_a_poll_job_whose_completion_starts_a_turn(
        mcp_http: HTTPServer) -> None:
    agent, session = _job_agent(mcp_http, Call("t__export", {"table": "accounts"}))
    try:
        events = [e.to_dict() async for e in agent.run("go", session=session)]
        pending = of_type(events, "job.pending")[0]
        assert pending["via"] == "poll"
        assert _terminal(events)["output"] == {"job_id": pending["job_id"], "status": "pending"}
        log = session.log
        await _until(lambda: len([e for e in log.replay(0) if e.type == "job.progress"]) >= 2,
                     "polled")
        task = next(e for e in mcp_http.events() if e["event"] == "task")
        mcp_http.post("/release", {"task": task["task"], "output": {"rows": 7}})
        await _until(lambda: any(e.type == "run.finished" and e.run_id != events[0]["run_id"]
                                 for e in log.replay(0)), "the job's turn")
    finally:
        await agent.aclose()
    everything_ = [e.to_dict() for e in session.log.replay(0)]
    check_protocol(everything_)
    messages = [e["message"] for e in of_type(everything_, "job.progress")]
    assert messages[0] == "queued" and messages[1].startswith("exporting (poll ")
    done = of_type(everything_, "job.completed")[0]
    assert done["status"] == "succeeded" and done["output"] == {"rows": 7}
    assert of_type(everything_, "run.started")[-1]["trigger"] == "job"


async def test_a_task_job_keeps_polling_after_a_kill_9_restart(
        serve_process: Any, tmp_path: Path, mcp_http: HTTPServer) -> None:
    env = {"TOOLPLEX_DB": str(tmp_path / "toolplex.sqlite"), "TOOLPLEX_MCP_URL": mcp_http.url}
    served = serve_process("tests.e2e.apps:mcp_app", env)
    async with httpx.AsyncClient() as client:
        created = (await client.post(f"{served.http}/v1/sessions")).json()
        sid, token = created["session_id"], created["token"]
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
            await ws.send(json.dumps({"type": "run.start", "input": "export accounts"}))
            seen: list[dict[str, Any]] = []
            while not (seen and seen[-1]["type"] == "run.finished"):
                with anyio.fail_after(15):
                    frame = json.loads(await ws.recv())
                if "seq" in frame:
                    seen.append(frame)
        job_id = of_type(seen, "job.pending")[0]["job_id"]
        await _until(lambda: any(e["event"] == "poll" for e in mcp_http.events()), "polled")
        os.kill(served.pid, signal.SIGKILL)
        polls = len([e for e in mcp_http.events() if e["event"] == "poll"])
        port = int(served.http.rsplit(":", 1)[1])
        restarted = serve_process("tests.e2e.apps:mcp_app", env, port=port)
        await _until(lambda: len([e for e in mcp_http.events() if e["event"] == "poll"]) > polls,
                     "polling resumed after the restart")
        task = next(e for e in mcp_http.events() if e["event"] == "task")
        mcp_http.post("/release", {"task": task["task"], "output": {"rows": 99}})
        with anyio.fail_after(15):
            while True:
                job = (await client.get(f"{restarted.http}/v1/jobs/{job_id}",
                                        headers={"Authorization": f"Bearer {token}"})).json()
                if job["status"] != "pending":
                    break
                await anyio.sleep(0.05)
    assert job["status"] == "succeeded" and job["output"] == {"rows": 99}


async def test_input_required_becomes_a_human_job_answered_by_calling_again(
        mcp_http: HTTPServer) -> None:
    agent, session = _job_agent(mcp_http, Call("t__ask", {}))
    try:
        events = [e.to_dict() async for e in agent.run("go", session=session)]
        pending = of_type(events, "job.pending")[0]
        assert pending["via"] == "human"
        output = _terminal(events)["output"]
        assert output["input_requests"]["city"]["params"]["message"] == "Which city?"
        asked = [e for e in session.log.replay(0) if e.type == "job.progress"]
        assert asked[0].to_dict()["message"] == "Which city?"
        assert agent.jobs.complete(pending["job_id"], "succeeded", output={"name": "Paris"})
        await _until(lambda: any(e.type == "job.completed" for e in session.log.replay(0)),
                     "answered")
    finally:
        await agent.aclose()
    done = next(e.to_dict() for e in session.log.replay(0) if e.type == "job.completed")
    assert done["status"] == "succeeded"
    assert done["output"] == {"result": "weather in Paris: sunny"}


async def test_mode_job_reports_progress_as_job_progress(mcp_http: HTTPServer) -> None:
    store = Store()
    agent = Agent(tools=[MCPServer.http(mcp_http.url, prefix="t", tool_options={
        "slow": {"mode": "job"}})], jobs=JobManager(store))
    session = agent.session()
    agent.jobs.attach(session)
    try:
        events = await _run(agent, [Call("t__slow", {"steps": 3, "delay": 0.01})],
                            session=session)
        job_id = of_type(events, "job.pending")[0]["job_id"]
        await _until(lambda: any(e.type == "job.completed" for e in session.log.replay(0)),
                     "done")
    finally:
        await agent.aclose()
    logged = [e.to_dict() for e in session.log.replay(0)]
    assert [e["message"] for e in of_type(logged, "job.progress")] == [
        "step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert of_type(logged, "job.completed")[0]["output"] == {"result": "slow done after 3 steps"}
    assert store.job(job_id)["status"] == "succeeded"  # type: ignore[index]


# -- the demo page -------------------------------------------------------------------------


async def test_the_demo_card_shows_mcp_progress_while_the_call_runs(
        serve: Any, browser: Browser, mcp_http: HTTPServer) -> None:  # noqa: F811
    model = ScriptedModel(scripts={
        "gate": [Step(calls=[Call("t__gated", {"key": "ui"})]), Step(text="Opened.")]})
    served = serve(Agent(tools=[MCPServer.http(mcp_http.url, prefix="t")], model=model))
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        demo = Demo(await context.new_page(), served)
        page = demo.page
        await demo.open()
        await demo.ask("gate")
        card = 'article.card[data-tool="t__gated"]'
        label = page.locator(f"{card} .progress-label")
        # The server waits at its gate: this bar can only come from progress as it happens.
        await expect(label).to_have_text("Progress 1/2 — waiting for ui", timeout=WAIT_MS)
        assert await page.get_attribute(card, "data-status") == "running"
        bar = page.locator(f"{card} .call-progress [role=progressbar]")
        assert await bar.get_attribute("aria-valuenow") == "50"
        await demo.shot("mcp-progress-running")
        await anyio.to_thread.run_sync(mcp_http.post, "/open", {"key": "ui"})
        await demo.finished()
        await expect(label).to_have_text("Progress 2/2 — opened (2 reports)")
        chunks = await page.locator(f"{card} .chunks").all_text_contents()
        assert not any('"progress"' in c for c in chunks), "progress reads as a bar, not JSON"
        await demo.shot("mcp-progress-done")
        assert not demo.errors
    finally:
        await context.close()

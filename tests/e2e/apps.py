"""App factories for tests that need the server in its own process (``uvicorn --factory``)."""

from __future__ import annotations

import os

import anyio
import anyio.lowlevel
from starlette.applications import Starlette

from toolplex import Agent, Job, Settings, create_app, tool
from toolplex.testing import Call, ScriptedModel, Step


@tool(reduce=lambda chunks: {"ticks": len(chunks)})
async def firehose(n: int, size: int):  # type: ignore[no-untyped-def]
    """Stream n chunks of `size` characters as fast as possible."""
    block = "x" * size
    for _ in range(n):
        await anyio.lowlevel.checkpoint()
        yield block


def firehose_app() -> Starlette:
    """3000 chunks of 16 KiB (48 MiB) per run; a small log window and strict readers."""
    model = ScriptedModel([Step(calls=[Call("firehose", {"n": 3000, "size": 16384})]),
                           Step(text="Done.")])
    settings = Settings(log_retain=500, reader_queue=100, reader_max_lag=400, send_timeout=0.5)
    return create_app(Agent(tools=[firehose], model=model), settings=settings)


@tool(mode="webhook")
async def export(table: str, job: Job) -> None:
    """Ask a partner to export a table; the partner calls job.callback_url back."""


def jobs_agent() -> Agent:
    """An agent whose "export" call waits for a signed webhook."""
    model = ScriptedModel(scripts={
        "job update": [Step(text="Reported: {{input}}")],
        "export": [Step(calls=[Call("export", {"table": "accounts"})]), Step(text="Asked.")],
    })
    return Agent(tools=[export], model=model)


def plain_app() -> Starlette:
    """The jobs agent with nothing kept on disk."""
    return create_app(jobs_agent())


def jobs_app() -> Starlette:
    """Durable: sessions and jobs in the SQLite file named by TOOLPLEX_DB."""
    return create_app(jobs_agent(), settings=Settings(db_path=os.environ["TOOLPLEX_DB"]))


@tool(reduce=lambda chunks: {"ticks": len(chunks)})
async def ticker(n: int, every: float):  # type: ignore[no-untyped-def]
    """Stream n numbered ticks, `every` seconds apart."""
    for i in range(n):
        await anyio.sleep(every)
        yield {"tick": i}


@tool(mode="human")
async def approve(percent: int, job: Job) -> None:
    """Ask a person to approve a discount."""


@tool(retries=0)
async def broken(x: int = 0) -> None:
    """An upstream that always fails."""
    raise ValueError("upstream broke")


def mcp_app() -> Starlette:
    """Durable (TOOLPLEX_DB), with the test MCP server at TOOLPLEX_MCP_URL mounted as `t`."""
    from toolplex.mcp import MCPServer

    model = ScriptedModel(scripts={
        "job update": [Step(text="Exported: {{input}}")],
        "export": [Step(calls=[Call("t__export", {"table": "accounts"})]), Step(text="Asked.")],
    })
    server = MCPServer.http(os.environ["TOOLPLEX_MCP_URL"], prefix="t", name="tasks-server")
    return create_app(Agent(tools=[server], model=model),
                      settings=Settings(db_path=os.environ["TOOLPLEX_DB"]))


@tool(mode="job")
async def crunch(rows: int) -> dict:  # type: ignore[type-arg]
    """A worker job that takes a minute (a process to kill while it runs)."""
    await anyio.sleep(60)
    return {"rows": rows}


def cluster_app() -> Starlette:
    """One of several processes sharing the Redis at TOOLPLEX_REDIS_URL.

    "tick" streams 20 ticks over 1 s; "slow" streams 200 over 20 s (a run to kill);
    "export" starts a webhook job whose completion gets a "job update" turn; "discount"
    waits for a person (job.complete, or an AG-UI resume); "break" fails 3 calls (the
    breaker opens).
    """
    model = ScriptedModel(scripts={
        "job update": [Step(text="Reported: {{input}}")],
        "export": [Step(calls=[Call("export", {"table": "accounts"})]), Step(text="Asked.")],
        "tick": [Step(calls=[Call("ticker", {"n": 20, "every": 0.05})]), Step(text="Ticked.")],
        "slow": [Step(calls=[Call("ticker", {"n": 200, "every": 0.1})]), Step(text="Slow.")],
        "discount": [Step(calls=[Call("approve", {"percent": 15})]), Step(text="Asked.")],
        "break": [Step(calls=[Call("broken", {"x": i}) for i in range(3)]), Step(text="Hm.")],
        "crunch": [Step(calls=[Call("crunch", {"rows": 3})]), Step(text="Crunching.")],
    })
    settings = Settings(lease_ttl=float(os.environ.get("TOOLPLEX_LEASE_TTL", "10")),
                        log_retain=int(os.environ.get("TOOLPLEX_LOG_RETAIN", "10000")),
                        session_idle_ttl=float(os.environ.get("TOOLPLEX_IDLE_TTL", "3600")))
    agent = Agent(tools=[ticker, export, approve, broken, crunch], model=model)
    return create_app(agent, settings=settings)


def durable_app() -> Starlette:
    """Sessions, jobs and every event in the SQLite file named by TOOLPLEX_DB.

    "slow" streams two calls of 200 ticks over 20 s (a run to kill); "tick" 5 ticks;
    "export" starts a webhook job whose completion turn ("job update") is slow too.
    """
    model = ScriptedModel(scripts={
        "job update": [Step(calls=[Call("ticker", {"n": 200, "every": 0.1})]),
                       Step(text="Reported.")],
        "export": [Step(calls=[Call("export", {"table": "accounts"})]), Step(text="Asked.")],
        "slow": [Step(calls=[Call("ticker", {"n": 200, "every": 0.1}),
                             Call("ticker", {"n": 200, "every": 0.1})]), Step(text="Slow.")],
        "tick": [Step(calls=[Call("ticker", {"n": 5, "every": 0.01})]), Step(text="Ticked.")],
    })
    settings = Settings(db_path=os.environ["TOOLPLEX_DB"], shutdown_grace=5.0)
    return create_app(Agent(tools=[ticker, export], model=model), settings=settings)

"""An agent with an MCP server's tools beside its own: the protocol's reference server
(`@modelcontextprotocol/server-everything`) over stdio.

Two of the server's tools run in parallel with a `@tool` of our own; the long operation's
`notifications/progress` stream in as its call's `tool.output.delta`, while it runs.

    (cd tests/mcp_servers && npm ci)      # the reference server, pinned (the tests use it)
    python examples/mcp_agent.py
    python examples/mcp_agent.py --http http://127.0.0.1:3001/mcp   # any streamable HTTP server
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import anyio

from toolplex import Agent, tool
from toolplex.mcp import MCPServer
from toolplex.testing import Call, ScriptedModel, Step

EVERYTHING = (Path(__file__).resolve().parents[1] / "tests/mcp_servers/node_modules"
              / "@modelcontextprotocol/server-everything/dist/index.js")


@tool
def lookup(domain: str) -> dict[str, str]:
    """Our own tool: a company's name from its domain."""
    return {"domain": domain, "name": domain.split(".")[0].title()}


def reference_server() -> MCPServer:
    if EVERYTHING.exists():
        return MCPServer.stdio("node", [str(EVERYTHING), "stdio"], prefix="ev")
    if shutil.which("npx"):
        return MCPServer.stdio("npx", ["-y", "@modelcontextprotocol/server-everything", "stdio"],
                               prefix="ev")
    raise SystemExit("run `(cd tests/mcp_servers && npm ci)` first, or pass --http URL")


async def main(http: str | None) -> None:
    server = MCPServer.http(http, prefix="ev") if http else reference_server()
    model = ScriptedModel([
        Step(calls=[Call("ev__trigger-long-running-operation", {"duration": 2, "steps": 4}),
                    Call("ev__get-sum", {"a": 19, "b": 23}),
                    Call("lookup", {"domain": "acme.com"})]),
        Step(text="The long operation finished; 19 + 23 = 42; acme.com is Acme."),
    ])
    agent = Agent(tools=[lookup, server], model=model)
    names: dict[str, str] = {}
    try:
        async for event in agent.run("run the long operation and add 19 and 23"):
            e = event.to_dict()
            if e["type"] == "tool.call.start":
                names[e["call_id"]] = e["name"]
            elif e["type"] == "tool.output.delta":
                data = e["data"]
                if isinstance(data, dict) and "progress" in data:
                    total = f"/{data['total']:g}" if "total" in data else ""
                    print(f"  {names[e['call_id']]}: progress {data['progress']:g}{total}")
            elif e["type"] in ("tool.result", "tool.error"):
                shown = e.get("output", e.get("error"))
                print(f"  {names[e['call_id']]}: {e['type']} {shown}")
            elif e["type"] == "text.delta":
                print(e["delta"], end="")
            elif e["type"] == "run.finished":
                print(f"\n[{e['outcome']}]")
        print(f"{len(agent.tool_names())} tools, {len(agent.tool_names()) - 1} of them the "
              "server's")
    finally:
        await agent.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--http", help="a streamable HTTP MCP endpoint instead of stdio")
    anyio.run(main, parser.parse_args().http)

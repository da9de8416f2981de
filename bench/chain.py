"""Dependent calls in one response: a chain saves the model round trips between its links.

A model whose every response takes ``--latency`` seconds before its first chunk (the
ScriptedModel's ``Step(delay=...)``, through the real ``openai`` SDK) and two 20 ms
tools, lookup then verify-the-email-found:

- two responses: lookup; then verify with the email (``{{lookup.contact.email}}``);
  then the answer: three model responses;
- one response, ``Agent(dependent_calls=True)``: lookup and verify with
  ``{"$from": 0, "path": "contact.email"}``; then the answer: two.

Printed: each run's wall, and what the one-response chain saves.

    python -m bench.chain [--runs 5] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import anyio

from toolplex import Agent, tool
from toolplex.testing import Call, ScriptedModel, Step


def _tools(seconds: float) -> list[Any]:
    @tool
    async def lookup(domain: str) -> dict[str, Any]:
        """Find the company's decision maker."""
        await anyio.sleep(seconds)
        return {"contact": {"email": f"dana@{domain}"}}

    @tool
    async def verify(email: str) -> dict[str, Any]:
        """Check an email address."""
        await anyio.sleep(seconds)
        return {"email": email, "deliverable": True}

    return [lookup, verify]


def scripts(latency: float) -> dict[str, list[Step]]:
    """The chain as two responses, and as one."""
    find = Call("lookup", {"domain": "acme.com"})
    answer = Step(delay=latency, text="Verified: {{verify.email}}.")
    return {
        "two_responses": [
            Step(delay=latency, calls=[find]),
            Step(delay=latency, calls=[Call("verify", {"email": "{{lookup.contact.email}}"})]),
            answer],
        "one_response": [
            Step(delay=latency, calls=[
                find, Call("verify", {"email": {"$from": 0, "path": "contact.email"}})]),
            answer],
    }


async def wall(script: list[Step], tool_s: float, *, dependent: bool) -> float:
    """Seconds for one run of ``script``."""
    agent = Agent(tools=_tools(tool_s), model=ScriptedModel(script), dependent_calls=dependent)
    start = time.perf_counter()
    results = 0
    async for event in agent.run("verify acme.com's contact"):
        results += event.type == "tool.result"
    assert results == 2, "both links of the chain succeeded"
    return time.perf_counter() - start


async def run(runs: int = 5, latency: float = 0.2, tool_s: float = 0.02) -> dict[str, float]:
    """Median walls (seconds) of both forms, after one warm-up each."""
    out: dict[str, float] = {}
    for key, script in scripts(latency).items():
        dependent = key == "one_response"
        await wall(script, tool_s, dependent=dependent)
        out[key] = statistics.median(
            [await wall(script, tool_s, dependent=dependent) for _ in range(runs)])
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.2)
    options = parser.parse_args(argv)
    r = asyncio.run(run(options.runs, options.latency))
    two, one = r["two_responses"], r["one_response"]
    print(f"median of {options.runs} runs; model latency {options.latency * 1000:.0f} ms a "
          "response; lookup then verify, 20 ms each")
    print(f"  two responses (3 model calls):                  {two * 1000:6.0f} ms")
    print(f"  one response, dependent_calls (2 model calls):  {one * 1000:6.0f} ms  "
          f"= {one / two:.2f}x, {(two - one) * 1000:.0f} ms saved")


if __name__ == "__main__":
    main()

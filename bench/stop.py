"""Stop a stream on a predicate: a generation that turns into a refusal ends there.

One step, one streaming tool yielding a chunk every ``--every`` seconds for ``--chunks``
chunks; the chunk at ``--refusal`` seconds is a refusal. With
``@tool(stop_when=...)`` the call ends on that chunk (``tool.result`` ``partial``,
``stopped_by: "predicate"``); without it the run waits for the whole stream, as it
must in a framework whose tools cannot be stopped by their own output. Printed: the
tool's span (its ``tool.exec.started`` to its terminal event) / the refusal's time.

    python -m bench.stop [--runs 5] [--chunks 50] [--every 0.1] [--refusal 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import anyio

from toolplex import Agent, tool
from toolplex.testing import Call, ScriptedModel, Step

REFUSAL = "I can't help with that."


def _writer(chunks: int, every: float, refusal: float, *, stop: bool) -> Any:
    refusal_at = max(1, round(refusal / every))

    async def writer(topic: str):  # type: ignore[no-untyped-def]
        """A long generation."""
        for index in range(1, chunks + 1):
            await anyio.sleep(every)
            yield REFUSAL if index == refusal_at else f"{topic} part {index}. "

    options: dict[str, Any] = {"timeout": chunks * every + 5, "retries": 0}
    if stop:
        options["stop_when"] = lambda chunk: chunk == REFUSAL
    return tool(**options)(writer)


async def span(chunks: int, every: float, refusal: float, *, stop: bool) -> float:
    """Seconds from the call's ``tool.exec.started`` to its terminal event."""
    agent = Agent(tools=[_writer(chunks, every, refusal, stop=stop)],
                  model=ScriptedModel([Step(calls=[Call("writer", {"topic": "x"})]),
                                       Step(text="ok")]))
    started = ended = 0.0
    async for event in agent.run("go"):
        if event.type == "tool.exec.started":
            started = anyio.current_time()
        elif event.type in {"tool.result", "tool.error"}:
            ended = anyio.current_time()
            assert getattr(event, "stopped_by", None) == ("predicate" if stop else None)
    return ended - started


async def run(chunks: int = 50, every: float = 0.1, refusal: float = 0.1,
              runs: int = 5) -> dict[str, float]:
    """Median spans (seconds) with and without ``stop_when``, after one warm-up each."""
    out: dict[str, float] = {"refusal_s": max(1, round(refusal / every)) * every}
    for key, stop in (("stop_when_s", True), ("without_s", False)):
        await span(chunks, every, refusal, stop=stop)
        samples = [await span(chunks, every, refusal, stop=stop)
                   for _ in range(runs if stop else 1)]
        out[key] = statistics.median(samples)
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--every", type=float, default=0.1)
    parser.add_argument("--refusal", type=float, default=0.1)
    options = parser.parse_args(argv)
    r = asyncio.run(run(options.chunks, options.every, options.refusal, options.runs))
    ideal = r["refusal_s"]
    total = options.chunks * options.every
    print(f"a {total:g} s stream whose chunk at {ideal * 1000:.0f} ms is a refusal; "
          f"tool span / {ideal * 1000:.0f} ms")
    print(f"  stop_when          {r['stop_when_s'] / ideal:6.2f}  "
          f"{r['stop_when_s'] * 1000:6.0f} ms  (median of {options.runs})")
    print(f"  without stop_when  {r['without_s'] / ideal:6.2f}  "
          f"{r['without_s'] * 1000:6.0f} ms  (the whole stream, once)")


if __name__ == "__main__":
    main()

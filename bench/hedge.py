"""Hedged start: a decisive call with a head start keeps its siblings from starting.

One step of three calls, the first to ``@tool(decisive=..., head_start=0.05)``:

- decisive: it answers decisively after 20 ms; its two siblings (5 s each) never start.
  Printed: siblings started, and the step's span (its first ``tool.call.end`` to its
  last terminal event) in ms (goal <= 30), and the whole run's wall (both model
  requests in it). For contrast, the same step without
  ``head_start``: the siblings start at once and are cancelled at 20 ms.
- not decisive, slower than the head start (200 ms): the siblings start when the head
  start runs out. Printed: ms from the step's first ``tool.call.end`` to the siblings'
  ``tool.exec.started`` (goal <= 55).
- not decisive, quicker than the head start (20 ms): the siblings start when it ends.

    python -m bench.hedge [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import anyio

from toolplex import Agent, Limits, tool
from toolplex.testing import Call, ScriptedModel, Step


def _cache(seconds: float, decisive: bool, head_start: float | None) -> Any:
    async def cache(q: str) -> dict[str, Any]:
        """A fast source that often answers outright."""
        await anyio.sleep(seconds)
        return {"answer": q if decisive else None}

    options: dict[str, Any] = {"decisive": lambda out: out["answer"] is not None}
    if head_start is not None:
        options["head_start"] = head_start
    return tool(**options)(cache)


def _sibling(seconds: float) -> Any:
    async def search(q: str) -> str:
        """A slow source."""
        await anyio.sleep(seconds)
        return q

    return tool(timeout=seconds + 5, retries=0)(search)


async def step(cache_s: float, decisive: bool, head_start: float | None,
               sibling_s: float) -> dict[str, float]:
    """One run: the step's span, when the siblings started (ms from the first call's
    ``tool.call.end``, when it starts), and how many did."""
    agent = Agent(tools=[_cache(cache_s, decisive, head_start), _sibling(sibling_s)],
                  model=ScriptedModel([Step(calls=[Call("cache", {"q": "x"}),
                                                   Call("search", {"q": "a"}),
                                                   Call("search", {"q": "b"})]),
                                       Step(text="ok")]),
                  limits=Limits(max_steps=3))
    first = last = 0.0
    names: dict[str, str] = {}
    starts: list[float] = []
    begun = time.perf_counter()
    async for event in agent.run("go"):
        now = time.perf_counter()
        if event.type == "tool.call.start":
            names[event.call_id] = event.name  # type: ignore[attr-defined]
        elif event.type == "tool.call.end":
            first = first or now  # the hedged call's arguments are complete: it starts
        elif event.type == "tool.exec.started" and names[event.call_id] == "search":  # type: ignore[attr-defined]
            starts.append(now)
        elif event.type in {"tool.result", "tool.error", "tool.cancelled"}:
            last = now
    return {"span_ms": (last - first) * 1000, "started": len(starts),
            "run_ms": (time.perf_counter() - begun) * 1000,
            "siblings_start_ms": (max(starts) - first) * 1000 if starts else 0.0}


async def run(runs: int = 5, *, cache_s: float = 0.02, slow_s: float = 0.2,
              head_start: float = 0.05, sibling_s: float = 5.0) -> dict[str, dict[str, float]]:
    """Each case: median of ``runs`` after one warm-up."""
    cases = {
        "decisive": (cache_s, True, head_start, sibling_s),
        "decisive_without_head_start": (cache_s, True, None, sibling_s),
        "not_decisive_slow": (slow_s, False, head_start, slow_s),
        "not_decisive_quick": (cache_s, False, head_start, cache_s),
    }
    out: dict[str, dict[str, float]] = {}
    for key, args in cases.items():
        await step(*args)
        samples = [await step(*args) for _ in range(runs)]
        out[key] = {name: statistics.median(s[name] for s in samples) for name in samples[0]}
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args(argv)
    r = asyncio.run(run(options.runs))
    print(f"median of {options.runs} runs; head_start=0.05; ms from the first call's "
          "tool.call.end")
    d, w = r["decisive"], r["decisive_without_head_start"]
    print(f"  decisive at 20 ms, 2 x 5 s siblings: siblings started {d['started']:.0f}/2, "
          f"step span {d['span_ms']:.1f} ms (goal <= 30), whole run {d['run_ms']:.1f} ms")
    print(f"    without head_start: siblings started {w['started']:.0f}/2 (cancelled), "
          f"step span {w['span_ms']:.1f} ms")
    s, q = r["not_decisive_slow"], r["not_decisive_quick"]
    print(f"  not decisive, 200 ms: siblings start at {s['siblings_start_ms']:.1f} ms "
          f"(goal <= 55)")
    print(f"  not decisive, 20 ms:  siblings start at {q['siblings_start_ms']:.1f} ms "
          f"(when it ends)")


if __name__ == "__main__":
    main()

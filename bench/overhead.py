"""What toolplex costs per tool call, against a raw asyncio loop doing the same work.

Both sides talk to the same kind of ScriptedModel through the same ``openai`` SDK
client path, so the model's cost (HTTP framing, JSON, chunk parsing) is in both:

- toolplex: ``Agent.run`` over a script of ``--steps`` steps of one zero-latency
  call each (and one step of ``--fanout`` calls), every event produced and drained;
- raw: a plain loop streaming each completion through the SDK client (the same
  ``post()`` request path OpenAIModel uses), gathering the call from the chunks,
  awaiting the tool function, appending the assistant and tool messages: what a
  hand-written agent loop does, nothing more.

And against the floor: toolplex on an in-memory ``Model`` (ModelChunks straight into
the runner, no client, no wire) against a raw anyio loop reading the same model's
chunks, gathering the calls, running them in a task group and appending the
messages, in the same process:

- one zero-latency call per run (two model responses): microseconds per run;
- one step of ``--fanout`` zero-latency calls: microseconds per call.

    python -m bench.overhead [--steps 500] [--fanout 50] [--runs 3] [--memory-runs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from importlib.metadata import version
from typing import Any

import anyio
from openai import AsyncStream

from toolplex import Agent, Limits, tool
from toolplex.model import CallArgs, CallBegin
from toolplex.testing import Call, ScriptedModel, Step

from .peers.toolplex import MemoryModel, prepare
from .workloads import Recorder, Script, ScriptCall


async def noop(key: str) -> str:
    """Answer at once."""
    return key


NOOP = tool(name="noop")(noop)


def _script(steps: int, fanout: int) -> list[Step]:
    if fanout > 1:
        calls = [[Call("noop", {"key": str(i)}) for i in range(fanout)]]
    else:
        calls = [[Call("noop", {"key": str(i)})] for i in range(steps)]
    return [*(Step(calls=c) for c in calls), Step(text="done")]


async def toolplex_loop(steps: int, fanout: int = 1) -> float:
    """Seconds for one toolplex run of the script."""
    width = max(fanout, 1) + 1
    agent = Agent(tools=[NOOP], model=ScriptedModel(_script(steps, fanout)),
                  # The whole history every request, as the raw loop sends it (the default
                  # window of 200 messages would send toolplex's model less).
                  limits=Limits(max_steps=steps + 2, max_calls_per_step=width,
                                max_concurrent_calls=width, max_history_messages=None))
    start = time.perf_counter()
    async for _ in agent.run("go"):
        pass
    return time.perf_counter() - start


async def raw_loop(steps: int, fanout: int = 1) -> float:
    """Seconds for a bare loop over the same script, through the same SDK client."""
    model = ScriptedModel(_script(steps, fanout))
    specs = [NOOP.spec()]
    history: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    start = time.perf_counter()
    while True:
        # The request path OpenAIModel uses: the SDK's post() streaming the chunks as
        # JSON objects (.create() would add a parameter transform that grows with the
        # history, and a pydantic model per chunk).
        stream = await model.client.post(
            "/chat/completions", cast_to=object, stream=True, stream_cls=AsyncStream[object],
            body={"model": "scripted", "messages": history, "tools": specs, "stream": True})
        calls: dict[int, dict[str, str]] = {}
        async for chunk in stream:
            for choice in chunk["choices"]:  # type: ignore[index]
                for delta in choice["delta"].get("tool_calls") or ():
                    call = calls.setdefault(delta["index"], {"id": "", "name": "", "args": ""})
                    call["id"] = delta.get("id") or call["id"]
                    function = delta.get("function") or {}
                    call["name"] = function.get("name") or call["name"]
                    call["args"] += function.get("arguments") or ""
        if not calls:
            return time.perf_counter() - start
        ordered = [calls[i] for i in sorted(calls)]
        history.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["args"]}} for c in ordered]})
        results = await asyncio.gather(*(noop(**json.loads(c["args"])) for c in ordered))
        history.extend({"role": "tool", "tool_call_id": c["id"], "content": r}
                       for c, r in zip(ordered, results, strict=True))


def _memory_script(width: int) -> Script:
    return [[ScriptCall("noop", {"key": str(i)}) for i in range(width)]]


async def memory_raw(width: int, runs: int) -> float:
    """Seconds per run of the floor: a bare anyio loop over the in-memory script."""
    model = MemoryModel(_memory_script(width))
    specs = [NOOP.spec()]

    async def call(results: list[str], n: int, arguments: str) -> None:
        results[n] = await noop(**json.loads(arguments))

    async def once() -> None:
        history: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
        while True:
            calls: dict[int, list[str]] = {}
            async for chunk in model.stream(history, specs):
                if isinstance(chunk, CallBegin):
                    calls[chunk.index] = [chunk.id, chunk.name, ""]
                elif isinstance(chunk, CallArgs):
                    calls[chunk.index][2] += chunk.fragment
            if not calls:
                return
            ordered = [calls[i] for i in sorted(calls)]
            history.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": c[0], "type": "function", "function": {"name": c[1], "arguments": c[2]}}
                for c in ordered]})
            results: list[str] = [""] * len(ordered)
            async with anyio.create_task_group() as group:
                for n, c in enumerate(ordered):
                    group.start_soon(call, results, n, c[2])
            history.extend({"role": "tool", "tool_call_id": c[0], "content": r}
                           for c, r in zip(ordered, results, strict=True))

    await once()
    start = time.perf_counter()
    for _ in range(runs):
        await once()
    return (time.perf_counter() - start) / runs


async def memory_toolplex(width: int, runs: int) -> float:
    """Seconds per run of toolplex's ``Agent.run`` on the in-memory model, every event drained."""
    run_once = prepare(_memory_script(width), Recorder().bodies({"noop": 0.0}), 3)
    await run_once()
    start = time.perf_counter()
    for _ in range(runs):
        await run_once()
    return (time.perf_counter() - start) / runs


async def _empty() -> None:
    pass


async def task_cost(width: int = 50, groups: int = 40) -> dict[str, float]:
    """Microseconds per task of ``width`` zero-work tasks in a group: anyio's
    ``start_soon`` (what toolplex and the floor start each call with) and asyncio's own
    ``TaskGroup``, for scale."""
    start = time.perf_counter()
    for _ in range(groups):
        async with anyio.create_task_group() as group:
            for _ in range(width):
                group.start_soon(_empty)
    middle = time.perf_counter()
    for _ in range(groups):
        async with asyncio.TaskGroup() as native:
            for _ in range(width):
                native.create_task(_empty())
    end = time.perf_counter()
    per = 1e6 / (width * groups)
    return {"anyio_task_us": (middle - start) * per, "asyncio_task_us": (end - middle) * per}


async def floor(fanout: int = 50, runs: int = 3, memory_runs: int = 500) -> dict[str, float]:
    """Toolplex on the in-memory model against the raw anyio loop: median microseconds per
    run (one call) and per call (``fanout`` calls in one step), interleaved run by run."""
    out: dict[str, float] = {}
    for label, width, n in (("run1", 1, memory_runs), ("fan", fanout, max(memory_runs // 10, 1))):
        ours, raw = [], []
        for _ in range(runs):
            ours.append(await memory_toolplex(width, n))
            raw.append(await memory_raw(width, n))
        per = 1e6 / (1 if label == "run1" else width)
        out[f"{label}_toolplex_us"] = statistics.median(ours) * per
        out[f"{label}_raw_us"] = statistics.median(raw) * per
        out[f"{label}_ratio"] = statistics.median(ours) / statistics.median(raw)
    costs = [await task_cost() for _ in range(runs)]
    for key in ("anyio_task_us", "asyncio_task_us"):
        out[key] = statistics.median(c[key] for c in costs)
    return out


async def run(steps: int = 500, fanout: int = 50, runs: int = 3) -> dict[str, float]:
    """Median microseconds per call for toolplex and raw, over steps and fanned out."""
    out: dict[str, float] = {}
    for label, n, width in (("steps", steps, 1), ("fanout", fanout, fanout)):
        await toolplex_loop(2, width)  # warm up imports, pools and caches
        await raw_loop(2, width)
        ours = statistics.median([await toolplex_loop(n, width) for _ in range(runs)])
        raw = statistics.median([await raw_loop(n, width) for _ in range(runs)])
        out[f"{label}_toolplex_us"] = ours / n * 1e6
        out[f"{label}_raw_us"] = raw / n * 1e6
        out[f"{label}_ratio"] = ours / raw
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--fanout", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-runs", type=int, default=500,
                        help="one-call runs per sample on the in-memory model (a tenth fanned out)")
    options = parser.parse_args(argv)
    r = asyncio.run(run(options.steps, options.fanout, options.runs))
    f = asyncio.run(floor(options.fanout, options.runs, options.memory_runs))
    print(f"per tool call, median of {options.runs} runs (model cost included on both sides)")
    print(f"  {'':36}{'toolplex':>10}{'raw loop':>10}{'ratio':>8}")
    for label, what in (("steps", f"{options.steps} steps x 1 zero-latency call"),
                        ("fanout", f"1 step x {options.fanout} zero-latency calls")):
        print(f"  {what:36}{r[label + '_toolplex_us']:>8,.0f}us{r[label + '_raw_us']:>8,.0f}us"
              f"{r[label + '_ratio']:>8.2f}")
    print("  goal: ratio <= 2")
    print(f"in memory (toolplex's Model protocol) against a raw anyio loop, median of "
          f"{options.runs}")
    print(f"  {'':36}{'toolplex':>10}{'raw loop':>10}{'ratio':>8}")
    for label, what, goal in (("run1", "1 zero-latency call: us per run", 4),
                              ("fan", f"1 step x {options.fanout} calls: us per call", 2)):
        print(f"  {what:36}{f[label + '_toolplex_us']:>8,.1f}us{f[label + '_raw_us']:>8,.1f}us"
              f"{f[label + '_ratio']:>8.2f}  (goal <= {goal})")
    print(f"  one task, this run: anyio start_soon {f['anyio_task_us']:.1f} us, asyncio "
          f"{f['asyncio_task_us']:.1f} us (anyio {version('anyio')}); a toolplex call "
          f"starts two (its own, its body's supervised one), the floor's one")


if __name__ == "__main__":
    main()

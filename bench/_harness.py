"""Measure one framework in this process and print its figures as JSON.

    python -m bench._harness toolplex --runs 5
    python -m bench._harness langgraph --rss 1000

Each framework runs in a process of its own (``python -m bench`` starts them), so
imports and memory of one never weigh on another. The framework module (in
:mod:`bench.peers`) provides ``prepare(script, bodies, max_steps)`` (an agent on
its own scripted model, returning a coroutine function that runs it once) and
``w5``, ``w6``, ``w7``; W1..W4 are the same code for everyone, here.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import resource
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from .workloads import WORKLOADS, Body, Cannot, Figure, Recorder, Script, Sizes

Measure = Callable[[], Awaitable[float]]
"""Runs a workload once and returns its figure."""
Setup = Callable[[ModuleType, Sizes], Measure]


def peer(name: str) -> ModuleType:
    """The framework module ``bench.peers.<name>``."""
    return importlib.import_module(f"bench.peers.{name}")


def _wall(run: Callable[[], Awaitable[None]], per: float) -> Measure:
    async def measure() -> float:
        start = time.perf_counter()
        await run()
        return (time.perf_counter() - start) / per

    return measure


def w1(p: ModuleType, s: Sizes) -> Measure:
    bodies = Recorder().bodies({"sleep": s.w1_latency})
    return _wall(p.prepare(s.w1_script(), bodies, 3), s.w1_latency)


def w2(p: ModuleType, s: Sizes) -> Measure:
    bodies = Recorder().bodies(s.w2_latencies())
    return _wall(p.prepare(s.w2_script(), bodies, 5), s.w2_critical())


def w3(p: ModuleType, s: Sizes) -> Measure:
    recorder = Recorder()
    run = p.prepare(s.w3_script(), recorder.bodies(s.w3_tools()), 3)

    async def measure() -> float:
        start = time.perf_counter()
        await run()
        return (recorder.last_end - start) / s.w3_ideal()

    return measure


def _per_call(script: Script, run: Callable[[], Awaitable[None]]) -> Measure:
    calls = sum(len(step) for step in script)
    return _wall(run, calls / 1e6)


def w4_steps(p: ModuleType, s: Sizes) -> Measure:
    script = s.w4_steps_script()
    return _per_call(script, p.prepare(script, Recorder().bodies({"noop": 0.0}), s.w4_steps + 2))


def w4_fanout(p: ModuleType, s: Sizes) -> Measure:
    script = s.w4_fanout_script()
    return _per_call(script, p.prepare(script, Recorder().bodies({"noop": 0.0}), 3))


def raw_prepare(script: Script, bodies: dict[str, Body], max_steps: int) -> Callable[
        [], Awaitable[None]]:
    """The baseline: a bare asyncio loop over the same script, no framework at all."""

    async def run() -> None:
        history: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
        for number in range(max_steps):
            calls = script[number] if number < len(script) else ()
            if not calls:
                history.append({"role": "assistant", "content": "done"})
                return
            ids = [f"call_{number}_{i}" for i in range(len(calls))]
            history.append({"role": "assistant", "tool_calls": [
                {"id": i, "name": c.name, "arguments": json.dumps(c.args)}
                for i, c in zip(ids, calls, strict=True)]})
            results = await asyncio.gather(*(bodies[c.name](**c.args) for c in calls))
            history.extend({"role": "tool", "tool_call_id": i, "content": r}
                           for i, r in zip(ids, results, strict=True))

    return run


class _Raw:
    prepare = staticmethod(raw_prepare)


def w4_steps_raw(p: ModuleType, s: Sizes) -> Measure:
    return w4_steps(_Raw, s)  # type: ignore[arg-type]


def w4_fanout_raw(p: ModuleType, s: Sizes) -> Measure:
    return w4_fanout(_Raw, s)  # type: ignore[arg-type]


def w5(p: ModuleType, s: Sizes) -> Measure:
    return p.w5(s)  # type: ignore[no-any-return]


def w6(p: ModuleType, s: Sizes) -> Measure:
    return p.w6(s)  # type: ignore[no-any-return]


def w7(p: ModuleType, s: Sizes) -> Measure:
    return p.w7(s)  # type: ignore[no-any-return]


SETUPS: dict[str, Setup] = {"w1": w1, "w2": w2, "w3": w3, "w4_steps": w4_steps,
                            "w4_fanout": w4_fanout, "w5": w5, "w6": w6, "w7": w7,
                            "w4_steps_raw": w4_steps_raw, "w4_fanout_raw": w4_fanout_raw}
assert set(WORKLOADS) <= set(SETUPS)


async def measure(name: str, sizes: Sizes, runs: int,
                  only: list[str] | None = None) -> dict[str, Any]:
    """Every workload ``runs`` times after one warm-up run: a Figure or a Cannot each."""
    p = peer(name)
    out: dict[str, Any] = {"framework": p.NAME, "versions": p.versions(), "notes": p.NOTES}
    for key, setup in SETUPS.items():
        if only and key not in only:
            continue
        try:
            once = setup(p, sizes)
            await once()
            values = [await once() for _ in range(runs)]
            out[key] = Figure.of(values)
        except Cannot as exc:
            out[key] = exc
    if (aclose := getattr(p, "aclose", None)) is not None:
        await aclose()
    return out


async def rss(name: str, sizes: Sizes, runs: int) -> dict[str, float]:
    """Peak RSS (MiB) of this process running ``runs`` W1 runs at once."""
    p = peer(name)
    run = p.prepare(sizes.w1_script(), Recorder().bodies({"sleep": sizes.w1_latency}), 3)
    await run()
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(runs)))
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_before_mib": before, "rss_peak_mib": peak, "wall_ratio": wall / sizes.w1_latency}


def to_json(value: Any) -> Any:
    if isinstance(value, Figure):
        return {"median": value.median, "low": value.low, "high": value.high, "runs": value.runs}
    if isinstance(value, Cannot):
        return {"cannot": value.why, "figure": value.figure}
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("framework")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rss", type=int, default=0, help="concurrent W1 runs to measure RSS")
    parser.add_argument("--tiny", action="store_true", help="the smoke test's sizes")
    parser.add_argument("--quick", action="store_true", help="fewer W4 steps and RSS runs")
    parser.add_argument("--only", nargs="*", help="workload keys to run")
    options = parser.parse_args(argv)
    sizes = Sizes.tiny() if options.tiny else Sizes.quick() if options.quick else Sizes()
    if options.rss:
        result: dict[str, Any] = asyncio.run(rss(options.framework, sizes, options.rss))
    else:
        result = asyncio.run(measure(options.framework, sizes, options.runs, options.only))
    print(json.dumps({k: to_json(v) for k, v in result.items()}))


if __name__ == "__main__":
    main()

"""App factories the benchmarks serve in their own process (``uvicorn --factory``)."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import anyio
import anyio.lowlevel
from starlette.applications import Starlette

from toolplex import Agent, Limits, Settings, create_app, tool
from toolplex.testing import Call, ScriptedModel, Step


@tool(reduce=lambda chunks: {"chunks": len(chunks)}, timeout=30)
async def firehose(n: int) -> object:
    """Yield n small chunks as fast as the reader takes them."""
    for i in range(n):
        yield {"i": i, "pad": "xxxxxxxx"}
        if i % 64 == 0:
            await anyio.lowlevel.checkpoint()


@tool(reduce=lambda chunks: {"chunks": len(chunks)}, timeout=30)
async def ticks(n: int, every: float) -> object:
    """Yield n chunks `every` seconds apart, each stamped with the wall time it was yielded."""
    for i in range(n):
        await anyio.sleep(every)
        yield {"i": i, "t": time.time()}


def _agent(call: Call) -> Agent:
    model = ScriptedModel([Step(calls=[call]), Step(text="done")])
    return Agent(tools=[firehose, ticks], model=model, limits=Limits(max_concurrent_calls=10))


def throughput_app() -> Starlette:
    """One run streams BENCH_CHUNKS small chunks."""
    n = int(os.environ.get("BENCH_CHUNKS", "20000"))
    settings = Settings(reader_queue=10**9, reader_max_lag=10**9, log_retain=n + 100)
    return create_app(_agent(Call("firehose", {"n": n})), settings=settings)


def sessions_app() -> Starlette:
    """Each run streams BENCH_TICKS chunks BENCH_EVERY seconds apart."""
    n = int(os.environ.get("BENCH_TICKS", "10"))
    every = float(os.environ.get("BENCH_EVERY", "0.1"))
    thresholds = os.environ.get("BENCH_GC_THRESHOLDS")
    settings = Settings()
    if thresholds:
        settings = replace(settings, gc_thresholds=tuple(map(int, thresholds.split(","))))
    return create_app(_agent(Call("ticks", {"n": n, "every": every})), settings=settings)


def scaleout_app() -> Starlette:
    """One of the processes bench/scaleout.py runs (on TOOLPLEX_REDIS_URL, when set).

    "tick" streams BENCH_TICKS stamped chunks BENCH_EVERY seconds apart; "fire" streams
    BENCH_CHUNKS chunks as fast as they go.
    """
    n = int(os.environ.get("BENCH_TICKS", "40"))
    every = float(os.environ.get("BENCH_EVERY", "0.05"))
    chunks = int(os.environ.get("BENCH_CHUNKS", "2000"))
    model = ScriptedModel(scripts={
        "tick": [Step(calls=[Call("ticks", {"n": n, "every": every})]), Step(text="done")],
        "fire": [Step(calls=[Call("firehose", {"n": chunks})]), Step(text="done")],
    })
    settings = Settings(reader_queue=10**9, reader_max_lag=10**9, log_retain=chunks + 100)
    return create_app(Agent(tools=[firehose, ticks], model=model), settings=settings)

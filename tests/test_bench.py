"""The issue benchmarks at tiny sizes, so their code cannot rot (figures live in the README).

Shapes and sanity are asserted, not timings: the one timing assertion is ordering that
holds by construction (side-effecting calls wait for the response, so they end later).
"""

from __future__ import annotations

import argparse
import asyncio
import math

from bench import chain, hedge, overhead, parallel, scaleout, sessions, stop, ws_throughput
from bench.workloads import Sizes


async def test_parallel_prints_w1_w3_and_the_side_effect_contrast() -> None:
    figures = await parallel.run(Sizes.tiny(), runs=1)
    assert set(figures) == {"w1", "w3", "w3_side_effects"}
    for figure in figures.values():
        assert math.isfinite(figure.median) and figure.median >= 1.0
    assert figures["w3_side_effects"].median > figures["w3"].median


async def test_overhead_compares_toolplex_with_a_raw_loop_on_the_same_client() -> None:
    _check_overhead(await overhead.run(steps=3, fanout=3, runs=1), ("steps", "fanout"))


async def test_overhead_measures_the_floor_on_the_in_memory_model() -> None:
    figures = await overhead.floor(fanout=3, runs=1, memory_runs=2)
    _check_overhead(figures, ("run1", "fan"))
    assert figures["anyio_task_us"] > 0 and figures["asyncio_task_us"] > 0


def _check_overhead(figures: dict[str, float], labels: tuple[str, str]) -> None:
    for label in labels:
        ours, raw = figures[f"{label}_toolplex_us"], figures[f"{label}_raw_us"]
        assert 0 < ours < 1e6 and 0 < raw < 1e6
        assert math.isclose(figures[f"{label}_ratio"], ours / raw)


def test_throughput_and_sessions_run_against_a_real_server_process() -> None:
    through = ws_throughput.measure(chunks=500, runs=1)
    assert through["toolplex"] > 0 and through["raw"] > 0
    many = asyncio.run(sessions.run(sessions=5, ticks=3, every=0.01))
    assert many["chunks"] == 15, "every chunk of every session arrived"
    assert 0 < many["p50_ms"] <= many["p99_ms"] <= many["max_ms"]
    assert many["server_cpu_us_per_chunk"] >= 0
    assert many["client_cpu_us_per_chunk"] > 0, "the readers' own CPU is counted"


def test_scaleout_runs_embedded_and_one_to_three_processes_on_a_real_redis() -> None:
    options = argparse.Namespace(sessions=4, ticks=3, every=0.01, fire_sessions=2, chunks=50)
    rows = asyncio.run(scaleout.run(options))
    assert [label for label, _ in rows] == [
        "embedded (1 process, no Redis)", "Redis, 1 process", "Redis, 2 processes",
        "Redis, 3 processes"]
    for _, figures in rows:  # (measure asserts every chunk of every session arrived)
        assert figures["events_s"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"]


async def test_stop_compares_a_stopped_stream_with_the_whole_one() -> None:
    figures = await stop.run(chunks=4, every=0.001, refusal=0.001, runs=1)
    # (span() asserts that the one run ended stopped_by predicate and the other did not)
    assert set(figures) == {"refusal_s", "stop_when_s", "without_s"}
    assert all(0 < seconds < 10 for seconds in figures.values())


async def test_hedge_holds_the_siblings_back_only_while_it_should() -> None:
    figures = await hedge.run(runs=1, cache_s=0.001, slow_s=0.01, head_start=30,
                              sibling_s=0.01)
    assert figures["decisive"]["started"] == 0, "a decisive hit in the window: none start"
    assert figures["decisive_without_head_start"]["started"] == 2
    assert figures["not_decisive_slow"]["started"] == 2
    assert figures["not_decisive_quick"]["started"] == 2


async def test_chain_runs_the_two_response_and_the_one_response_forms() -> None:
    figures = await chain.run(runs=1, latency=0.001, tool_s=0.001)
    assert set(figures) == {"two_responses", "one_response"}
    assert all(0 < seconds < 10 for seconds in figures.values())


"""Many sessions at once: latency from a tool's yield to the reader's receipt, and memory.

N sessions each open a WebSocket reader and start a run whose tool yields
chunks 100 ms apart, each stamped with the wall time it was yielded; the reader
records when it received it. The server runs in its own process, so its RSS
growth divided by N is the memory one live session costs, and its CPU time while
the sessions stream, divided by the chunks delivered, what a chunk costs it.

    python -m bench.sessions [--sessions 1000] [--ticks 200] [--gc-thresholds 700,10,10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import httpx
from websockets.asyncio.client import ClientConnection, connect

from ._serve import cpu_seconds, free_port, process, rss_mib, uvicorn_argv


async def _session(client: httpx.AsyncClient, base: str,
                   slots: asyncio.Semaphore) -> tuple[str, str]:
    # A slot per pooled connection: thousands of requests queued in the pool itself
    # cost the client seconds of CPU and time out (httpx PoolTimeout).
    async with slots:
        body = (await client.post(f"{base}/v1/sessions")).json()
    return body["session_id"], body["token"]


async def _follow(ws: ClientConnection, latencies: list[float], delay: float) -> None:
    await asyncio.sleep(delay)
    await ws.send(json.dumps({"type": "run.start", "input": "go"}))
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "tool.output.delta":
            latencies.append(time.time() - frame["data"]["t"])
        elif frame["type"] in ("run.finished", "run.error"):
            return


async def run(sessions: int, ticks: int, every: float, spread: float | None = None,
              gc_thresholds: str | None = None) -> dict[str, float]:
    """Latency quantiles (ms) and RSS per session (KiB) for ``sessions`` at once.

    Runs start spread uniformly over ``spread`` seconds (default: one stream's length),
    as users do; in lock-step every run would reach its model step in the same instant.
    """
    spread = ticks * every if spread is None else spread
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"BENCH_TICKS": str(ticks), "BENCH_EVERY": str(every),
           "BENCH_GC_THRESHOLDS": gc_thresholds or ""}
    with process(uvicorn_argv("bench.apps:sessions_app", port), port, env=env) as proc:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            slots = asyncio.Semaphore(64)
            ids = await asyncio.gather(*(_session(client, base, slots) for _ in range(sessions)))
        before = rss_mib(proc.pid)
        sockets = []
        for sid, token in ids:
            sockets.append(await connect(
                f"ws://127.0.0.1:{port}/v1/sessions/{sid}/ws?token={token}&after=0",
                compression=None))
        latencies: list[float] = []
        cpu_before = cpu_seconds(proc.pid)
        own_before = time.process_time()
        start = time.perf_counter()
        peak = 0.0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mib(proc.pid))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(_follow(ws, latencies, spread * i / len(sockets))
                               for i, ws in enumerate(sockets)))
        sampler.cancel()
        wall = time.perf_counter() - start
        cpu = cpu_seconds(proc.pid) - cpu_before
        own = time.process_time() - own_before
        for ws in sockets:
            await ws.close()
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": ordered[-1] * 1000,
            "chunks": len(ordered), "wall_s": wall,
            "server_cpu_us_per_chunk": cpu / len(ordered) * 1e6,
            "client_cpu_us_per_chunk": own / len(ordered) * 1e6,
            "rss_per_session_kib": (peak - before) * 1024 / sessions,
            "rss_before_mib": before, "rss_peak_mib": peak,
            "median_ms": statistics.median(ordered) * 1000}


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--every", type=float, default=0.1)
    parser.add_argument("--spread", type=float, default=None,
                        help="seconds over which runs start (default: one stream's length; "
                             "0: all at once)")
    parser.add_argument("--gc-thresholds", metavar="A,B,C",
                        help="serve with Settings(gc_thresholds=(A, B, C)); CPython's: 700,10,10")
    options = parser.parse_args(argv)
    r = asyncio.run(run(options.sessions, options.ticks, options.every, options.spread,
                        gc_thresholds=options.gc_thresholds))
    spread = options.ticks * options.every if options.spread is None else options.spread
    print(f"{options.sessions} concurrent sessions, each a WebSocket reader and a tool "
          f"yielding {options.ticks} chunks {options.every * 1000:.0f} ms apart; runs start "
          f"spread over {spread:.1f} s; "
          f"GC thresholds {options.gc_thresholds or 'Settings default'}")
    print(f"  yield -> receipt latency: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
          f"max {r['max_ms']:.1f} ms over {r['chunks']:.0f} chunks (goal p99 <= 20 ms)")
    print(f"  server RSS: {r['rss_before_mib']:.0f} MiB idle sessions -> "
          f"{r['rss_peak_mib']:.0f} MiB peak; {r['rss_per_session_kib']:.0f} KiB per live "
          f"session")
    print(f"  server CPU: {r['server_cpu_us_per_chunk']:.0f} us per delivered chunk "
          f"(its whole CPU time while the sessions stream, runs and readers included)")
    # What the goal asks of this machine: every session's chunk rate at once, at the
    # measured costs of both sides (they share its cores).
    rate = options.sessions / options.every
    need = rate * (r["server_cpu_us_per_chunk"] + r["client_cpu_us_per_chunk"]) / 1e6
    print(f"  client CPU: {r['client_cpu_us_per_chunk']:.0f} us per chunk (this process: "
          f"its WebSocket readers); all {options.sessions} streaming at once "
          f"({rate:,.0f} chunks/s) would take {need:.2f} cores at these costs, "
          f"of the machine's {os.cpu_count()}")


if __name__ == "__main__":
    main()

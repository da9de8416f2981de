"""Scale-out on one Redis: events/s and chunk latency with 1, 2 and 3 server processes.

Each configuration serves the same app: the embedded default (one process, no Redis)
and 1, 2, 3 processes sharing one ``redis-server`` on this machine. Sessions are spread
over the processes; each session's WebSocket reader is on a *different* process from
the one its run executes on (with 2 or 3 processes), so every event crosses Redis:
the worst case for a reader behind a load balancer.

- latency: S sessions, each a tool yielding T chunks ``every`` seconds apart, stamped
  with the wall time of the yield; p50/p99 from yield to the reader's receipt.
- events/s: F sessions whose tool yields C chunks as fast as it can; chunks received by
  all readers per second of wall time, and the ratio to the embedded default.

    python -m bench.scaleout [--sessions 200] [--ticks 40] [--every 0.05]
                             [--fire-sessions 10] [--chunks 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import ExitStack
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from toolplex.testing import RedisServer

from ._serve import free_port, process, uvicorn_argv


async def _open(bases: list[str], i: int, client: httpx.AsyncClient
                ) -> tuple[ClientConnection, str, str, str]:
    """Session i: created on one process, read on process i, run on process i + 1."""
    reader, runner = bases[i % len(bases)], bases[(i + 1) % len(bases)]
    body = (await client.post(f"http://{reader}/v1/sessions")).json()
    sid, token = body["session_id"], body["token"]
    ws = await connect(f"ws://{reader}/v1/sessions/{sid}/ws?token={token}&after=0",
                       compression=None, max_size=None)
    return ws, runner, sid, token


async def _read(ws: ClientConnection, on_chunk: Any) -> None:
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "tool.output.delta":
            on_chunk(frame)
        elif frame["type"] in ("run.finished", "run.error"):
            assert frame["type"] == "run.finished", frame
            return


async def _workload(bases: list[str], sessions: int, text: str, spread: float,
                    on_chunk: Any) -> float:
    """Run ``text`` in every session, starts spread over ``spread`` s; the wall time."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        opened = [await _open(bases, i, client) for i in range(sessions)]

        async def one(i: int) -> None:
            ws, runner, sid, token = opened[i]
            await asyncio.sleep(spread * i / sessions)
            answer = await client.post(f"http://{runner}/v1/sessions/{sid}/runs",
                                       json={"input": text},
                                       headers={"authorization": f"Bearer {token}"})
            assert answer.status_code == 202, answer.text
            await _read(ws, on_chunk)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(len(opened))))
        wall = time.perf_counter() - start
        for ws, *_ in opened:
            await ws.close()
    return wall


async def measure(processes: int, redis: RedisServer | None, options: argparse.Namespace
                  ) -> dict[str, float]:
    """One configuration's figures."""
    env = {"BENCH_TICKS": str(options.ticks), "BENCH_EVERY": str(options.every),
           "BENCH_CHUNKS": str(options.chunks), "TOOLPLEX_REDIS_URL": redis.url if redis else ""}
    with ExitStack() as stack:
        bases = []
        for _ in range(processes):
            port = free_port()
            stack.enter_context(process(uvicorn_argv("bench.apps:scaleout_app", port), port,
                                        env=env))
            bases.append(f"127.0.0.1:{port}")
        latencies: list[float] = []
        await _workload(bases, options.sessions, "tick", options.ticks * options.every,
                        lambda f: latencies.append(time.time() - f["data"]["t"]))
        received = [0]

        def count(frame: dict[str, Any]) -> None:
            received[0] += 1

        wall = await _workload(bases, options.fire_sessions, "fire", 0.0, count)
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    assert received[0] == options.fire_sessions * options.chunks, received
    assert len(ordered) == options.sessions * options.ticks, len(ordered)
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "events_s": received[0] / wall}


async def run(options: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    """Every configuration, embedded first."""
    rows = [("embedded (1 process, no Redis)", await measure(1, None, options))]
    for processes in (1, 2, 3):
        with RedisServer() as redis:  # a fresh, empty Redis per configuration
            label = f"Redis, {processes} process{'es' if processes > 1 else ''}"
            rows.append((label, await measure(processes, redis, options)))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--fire-sessions", type=int, default=10)
    parser.add_argument("--chunks", type=int, default=2000)
    options = parser.parse_args(argv)
    rows = asyncio.run(run(options))
    base = rows[0][1]["events_s"]
    print(f"latency: {options.sessions} sessions, a tool yielding {options.ticks} chunks "
          f"{options.every * 1000:.0f} ms apart each; events/s: {options.fire_sessions} "
          f"sessions streaming {options.chunks} chunks as fast as they go. Readers sit on "
          f"another process than the run when there are several.")
    print(f"{'configuration':34} {'events/s':>9} {'vs embedded':>12} {'p50 ms':>8} "
          f"{'p99 ms':>8}")
    for label, r in rows:
        print(f"{label:34} {r['events_s']:9.0f} {r['events_s'] / base:11.2f}x "
              f"{r['p50_ms']:8.1f} {r['p99_ms']:8.1f}")


if __name__ == "__main__":
    main()

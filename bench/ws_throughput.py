"""Events per second through one WebSocket reader: toolplex against a bare websockets server.

A tool streams small chunks as fast as it can; one WebSocket reader receives them.
The baseline is a bare ``websockets`` server sending frames of the same shape,
measured in the same run on the same machine; each server runs in its own process.
The figure is the ratio toolplex / baseline (goal >= 0.5).

    python -m bench.ws_throughput [--chunks 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import httpx
from websockets.asyncio.client import connect

from ._serve import free_port, process, uvicorn_argv


async def _receive(url: str, first: str, chunks: int, kind: str | None) -> float:
    """Frames per second from the first counted frame to the last."""
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.send(first)
        got, start = 0, 0.0
        while got < chunks:
            frame = json.loads(await ws.recv())
            if kind is None or frame.get("type") == kind:
                got += 1
                if got == 1:
                    start = time.perf_counter()
        return (chunks - 1) / (time.perf_counter() - start)


async def toolplex_rate(chunks: int) -> float:
    """Output deltas per second through toolplex's WebSocket reader."""
    port = free_port()
    argv = uvicorn_argv("bench.apps:throughput_app", port)
    with process(argv, port, env={"BENCH_CHUNKS": str(chunks)}):
        async with httpx.AsyncClient() as client:
            body = (await client.post(f"http://127.0.0.1:{port}/v1/sessions")).json()
        url = (f"ws://127.0.0.1:{port}/v1/sessions/{body['session_id']}/ws"
               f"?token={body['token']}&after=0")
        start = json.dumps({"type": "run.start", "input": "go"})
        return await _receive(url, start, chunks, "tool.output.delta")


async def raw_rate(chunks: int) -> float:
    """Frames per second from a bare websockets server."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.raw_ws", "--port", str(port), "--chunks", str(chunks)]
    with process(argv, port, ready=""):
        return await _receive(f"ws://127.0.0.1:{port}/", "go", chunks, None)


def measure(chunks: int = 20000, runs: int = 5) -> dict[str, float]:
    """Medians (and ranges) of both rates, interleaved run by run."""
    ours, raw = [], []
    for _ in range(runs):
        ours.append(asyncio.run(toolplex_rate(chunks)))
        raw.append(asyncio.run(raw_rate(chunks)))
    return {"toolplex": statistics.median(ours), "raw": statistics.median(raw),
            "toolplex_min": min(ours), "toolplex_max": max(ours),
            "raw_min": min(raw), "raw_max": max(raw),
            "ratio": statistics.median(ours) / statistics.median(raw)}


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args(argv)
    r = measure(options.chunks, options.runs)
    print(f"WebSocket reader throughput, {options.chunks} chunks, median of {options.runs}")
    print(f"  {'server':<22}{'events/s':>12}{'min':>12}{'max':>12}")
    print(f"  {'bare websockets':<22}{r['raw']:>12,.0f}{r['raw_min']:>12,.0f}"
          f"{r['raw_max']:>12,.0f}")
    print(f"  {'toolplex':<22}{r['toolplex']:>12,.0f}{r['toolplex_min']:>12,.0f}"
          f"{r['toolplex_max']:>12,.0f}")
    print(f"  ratio toolplex / bare: {r['ratio']:.2f}  (goal >= 0.5)")


if __name__ == "__main__":
    main()

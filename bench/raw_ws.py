"""The baseline: a bare ``websockets`` server sending the same frames toolplex would.

    python -m bench.raw_ws --port 9000 --chunks 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from websockets.asyncio.server import ServerConnection, serve


async def main(port: int, chunks: int) -> None:
    """On each connection: wait for one message, then send ``chunks`` JSON frames."""

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for i in range(chunks):
            frame = {"v": 1, "seq": i + 1, "type": "tool.output.delta",
                     "ts": time.time_ns() // 1_000_000, "session_id": "s_0123456789ab",
                     "run_id": "r_0123456789ab", "call_id": "c_0123456789ab", "attempt": 1,
                     "index": i, "data": {"i": i, "pad": "xxxxxxxx"}}
            await ws.send(json.dumps(frame, separators=(",", ":")))

    async with serve(handler, "127.0.0.1", port, compression=None):
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20000)
    options = parser.parse_args()
    asyncio.run(main(options.port, options.chunks))

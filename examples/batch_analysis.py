"""Long-running tools as jobs: a 30 s batch analysis run by a worker with progress, and
a partner export finished by a signed webhook from a second process.

The tools and scripts are the demo agent's (server/toolplex/demo/batch.py); this script
serves them on a free port and prints the events until both jobs have been reported.
The partner is server/toolplex/demo/partner.py.

    python examples/batch_analysis.py            # 30 s
    python examples/batch_analysis.py --seconds 5
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import threading
import time

import httpx2
import uvicorn

from toolplex import Agent, ScriptedModel
from toolplex.demo.batch import SCRIPTS, TOOLS
from toolplex.server import Settings, create_app
from toolplex.testing import Call, Step


def main(argv: list[str] | None = None) -> None:
    """Serve the agent on a free port, start the analysis and the export, print events
    until both jobs have finished and been reported in their own turns."""
    parser = argparse.ArgumentParser(description="Long-running tools as jobs.")
    parser.add_argument("--seconds", type=float, default=30.0, help="analysis duration")
    options = parser.parse_args(argv)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    os.environ["TOOLPLEX_WEBHOOK_SECRET"] = secret  # the partner process inherits it
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    scripts = {**SCRIPTS, "batch": [
        Step(text="Running the analysis as a background job. ",
             calls=[Call("batch_report", {"dataset": "q3_sales", "seconds": options.seconds})]),
        Step(text="It's running; I'll report when it's done.")]}
    agent = Agent(tools=TOOLS, model=ScriptedModel(scripts=scripts))
    app = create_app(agent, settings=Settings(public_url=base, webhook_secret=secret))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    start = time.monotonic()
    with httpx2.Client(base_url=base, timeout=None) as client:
        created = client.post("/v1/sessions").json()
        auth = {"authorization": f"Bearer {created['token']}"}
        sid = created["session_id"]
        for text in ("Run the batch analysis", "Start the partner export"):
            client.post(f"/v1/sessions/{sid}/runs", json={"input": text},
                        headers={**auth, "accept": "text/event-stream"}).read()
        job_turns, job_runs, text = 0, set(), []
        with client.stream("GET", f"/v1/sessions/{sid}/events", headers=auth) as events:
            for line in events.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                kind = event["type"]
                if kind == "text.delta":
                    text.append(event["delta"])
                if kind == "text.end":
                    print(f"{time.monotonic() - start:6.1f} s  assistant: {''.join(text)}")
                    text.clear()
                if kind in {"text.start", "text.delta", "text.end", "tool.call.delta",
                            "stream.hello"}:
                    continue
                detail = {k: v for k, v in event.items() if k not in {
                    "v", "seq", "type", "ts", "session_id", "run_id", "call_id", "message_id"}}
                print(f"{time.monotonic() - start:6.1f} s  {kind:<18} "
                      f"{json.dumps(detail, default=str)[:100]}")
                if kind == "run.started" and event.get("trigger") == "job":
                    job_runs.add(event["run_id"])
                if kind == "run.finished" and event.get("run_id") in job_runs:
                    job_turns += 1
                if job_turns == 2:
                    break
    server.should_exit = True


if __name__ == "__main__":
    main()

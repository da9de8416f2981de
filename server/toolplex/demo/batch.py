"""Long-running tools: a batch analysis run by a worker, a partner export finished by a
signed webhook from another process, and a discount a person approves.

Each call returns ``{job_id, status: pending}`` at once; the turn ends; the job's
completion starts a new turn in which the agent reports the result.

Run it: ``python examples/batch_analysis.py`` (a 30 s analysis; ``--seconds 5`` for less)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import anyio

from ..jobs import Job
from ..scripted import Call as _Call, Results, Step
from ..tools import tool

ANALYSIS_SECONDS = float(os.environ.get("TOOLPLEX_DEMO_BATCH_SECONDS", "8"))


@tool(mode="job")
async def batch_report(dataset: str, job: Job, seconds: float = ANALYSIS_SECONDS) -> dict[str, Any]:
    """Analyse a whole dataset (slow: runs as a background job with progress).

    Args:
        dataset: The dataset to analyse, e.g. q3_sales.
        seconds: How long the analysis takes.
    """
    steps = 10
    for done in range(1, steps + 1):
        await anyio.sleep(seconds / steps)
        await job.progress(done, steps, f"scanned {done * 10}% of {dataset}")
    return {"dataset": dataset, "rows": 48_213, "anomalies": 3,
            "top_region": "EMEA", "growth": "+12.4%"}


@tool(mode="webhook")
async def start_export(table: str, job: Job) -> None:
    """Ask the data partner to export a table; they call back when it is ready.

    Args:
        table: The table to export.
    """
    # The partner is another process: it signs its callback with the shared secret.
    subprocess.Popen([sys.executable, "-m", "toolplex.demo.partner", job.callback_url,
                      "--table", table, "--delay", "3"])


@tool(mode="human")
async def approve_discount(percent: int, customer: str, job: Job) -> None:
    """Ask a sales manager to approve a discount (a person completes the job).

    Args:
        percent: The discount, in percent.
        customer: Who gets it.
    """


def _update(results: Results) -> dict[str, Any]:
    text = results.get("input", "")
    return json.loads(text.split(". ", 1)[1]) if ". " in text else {}


def _report(results: Results) -> str:
    update = _update(results)
    if update.get("status") != "succeeded":
        return f"The batch analysis ended {update.get('status')}: {update.get('error')}."
    out = update["output"]
    return (f"The batch analysis of {out['dataset']} is done: {out['rows']:,} rows, "
            f"{out['anomalies']} anomalies, strongest region {out['top_region']} "
            f"({out['growth']}).")


def _approval(results: Results) -> str:
    update = _update(results)
    output = update.get("output") or {}
    if update.get("status") == "succeeded" and output.get("approved"):
        return "The manager approved the discount: I'm applying it to the quote."
    reason = output.get("reason") or update.get("error") or "no reason given"
    return f"The discount was not approved ({reason}); the quote stays as it is."


def _export(results: Results) -> str:
    out = _update(results).get("output") or {}
    return f"The partner's export is ready: {out.get('rows')} rows at {out.get('file')}."


SCRIPTS: dict[str, list[Step]] = {
    "job update: batch_report": [Step(text=_report, token_delay=0.02)],
    "job update: approve_discount": [Step(text=_approval, token_delay=0.02)],
    "job update: start_export": [Step(text=_export, token_delay=0.02)],
    "batch": [
        Step(text="That takes a while, so I'm running the analysis as a background job. ",
             token_delay=0.02, calls=[_Call("batch_report", {"dataset": "q3_sales"})]),
        Step(text="It's running; you'll see its progress, and I'll report when it's done.",
             token_delay=0.02),
    ],
    "approve": [
        Step(text="A 15% discount needs a manager's approval; I've asked for it. ",
             token_delay=0.02,
             calls=[_Call("approve_discount", {"percent": 15, "customer": "Acme"})]),
        Step(text="Waiting for the decision.", token_delay=0.02),
    ],
    "export": [
        Step(text="I've asked the data partner for the export. ", token_delay=0.02,
             calls=[_Call("start_export", {"table": "accounts"})]),
        Step(text="They will call back when it is ready.", token_delay=0.02),
    ],
}

TOOLS = [batch_report, start_export, approve_discount]

"""``toolplex serve`` as a real process: what its log says at startup, and the demo's
webhook job completing with the secret it generated."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx


def _events(url: str, sid: str, token: str, until: Callable[[dict[str, Any]], bool],
            timeout: float = 30) -> list[dict[str, Any]]:
    """The session's events over SSE from seq 0 until ``until`` holds for one."""
    seen: list[dict[str, Any]] = []
    headers = {"authorization": f"Bearer {token}"}
    with httpx.stream("GET", f"{url}/v1/sessions/{sid}/events?after=0", headers=headers,
                      timeout=timeout) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                seen.append(event)
                if until(event):
                    return seen
    raise AssertionError(f"the stream ended first: {[e['type'] for e in seen]}")


def test_the_demo_export_completes_with_a_generated_webhook_secret(toolplex_serve) -> None:
    served = toolplex_serve()
    created = httpx.post(f"{served.url}/v1/sessions").json()
    sid, token = created["session_id"], created["token"]
    answer = httpx.post(f"{served.url}/v1/sessions/{sid}/runs", json={"input": "export"},
                        headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 202, answer.text
    job_runs: set[str] = set()

    def job_turn_ended(event: dict[str, Any]) -> bool:
        if event["type"] == "run.started" and event.get("trigger") == "job":
            job_runs.add(event["run_id"])
        return event["type"] in {"run.finished", "run.error"} and event["run_id"] in job_runs

    events = _events(served.url, sid, token, job_turn_ended)
    completed = [e for e in events if e["type"] == "job.completed"]
    assert [c["status"] for c in completed] == ["succeeded"], completed
    assert completed[0]["output"]["rows"] == 1284, "the partner's signed webhook got through"
    messages = [line["msg"] for line in served.logged()]
    assert any("generated a webhook secret" in m for m in messages), messages
    assert not any("whsec_" in line for line in served.log.read_text().splitlines()), \
        "the secret itself is never logged"


def test_a_real_model_without_a_key_warns_at_startup(toolplex_serve) -> None:
    served = toolplex_serve("--model", "llama3.1", "--base-url", "http://127.0.0.1:9/v1")
    warnings = [line for line in served.logged() if line["level"] == "warning"]
    assert any("has no API key" in w["msg"] for w in warnings), served.log.read_text()


def test_a_model_with_a_key_does_not_warn(toolplex_serve) -> None:
    served = toolplex_serve("--model", "gpt-4o-mini", env={"OPENAI_API_KEY": "sk-test"})
    assert not any("API key" in line["msg"] for line in served.logged())

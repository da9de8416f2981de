"""/metrics scraped from a real server: histograms that add up across processes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from toolplex import Agent, tool
from toolplex.testing import Call, ScriptedModel, Step

from .conftest import Served


@tool
async def ticker(symbol: str) -> dict[str, Any]:
    """A quote."""
    return {"symbol": symbol, "price": 10}


@tool(retries=0)
async def broken(symbol: str) -> dict[str, Any]:
    """Always fails."""
    raise ValueError("no quote")


def _agent() -> Agent:
    model = ScriptedModel([Step(calls=[Call("ticker", {"symbol": "ACME"}),
                                       Call("broken", {"symbol": "ACME"})]),
                           Step(text="done")])
    return Agent(tools=[ticker, broken], model=model)


async def _one_run(served: Served) -> str:
    async with httpx.AsyncClient(base_url=served.http, timeout=30) as client:
        session = (await client.post("/v1/sessions")).json()
        headers = {"authorization": f"Bearer {session['token']}",
                   "accept": "text/event-stream"}
        async with client.stream("POST", f"/v1/sessions/{session['session_id']}/runs",
                                 json={"input": "quote"}, headers=headers) as response:
            body = "".join([chunk async for chunk in response.aiter_text()])
        assert '"run.finished"' in body
        return str(session["session_id"])


async def _scrape(served: Served) -> tuple[str, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{served.http}/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return text, families


def _samples(family: Any, name: str, **labels: str) -> list[Any]:
    return [s for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


async def test_histograms_after_a_run(serve: Callable[..., Served]) -> None:
    served = serve(_agent())
    session_id = await _one_run(served)
    text, families = await _scrape(served)
    for name in ("toolplex_tool_duration_seconds", "toolplex_run_duration_seconds",
                 "toolplex_model_time_to_first_token_seconds",
                 "toolplex_http_request_duration_seconds"):
        assert families[name].type == "histogram", name
    tools = families["toolplex_tool_duration_seconds"]
    [ok] = _samples(tools, "toolplex_tool_duration_seconds_count", tool="ticker",
                    outcome="result")
    [failed] = _samples(tools, "toolplex_tool_duration_seconds_count", tool="broken",
                        outcome="error")
    assert ok.value == failed.value == 1
    buckets = _samples(tools, "toolplex_tool_duration_seconds_bucket", tool="ticker")
    counts = [b.value for b in sorted(buckets, key=lambda b: float(b.labels["le"]))]
    assert counts == sorted(counts) and counts[-1] == 1, "cumulative buckets end at the count"
    [runs] = _samples(families["toolplex_run_duration_seconds"],
                      "toolplex_run_duration_seconds_count")
    assert runs.value == 1
    [first] = _samples(families["toolplex_model_time_to_first_token_seconds"],
                       "toolplex_model_time_to_first_token_seconds_count")
    assert first.value == 2, "one per model response (two steps)"
    http = families["toolplex_http_request_duration_seconds"]
    routes = Counter((s.labels["method"], s.labels["route"], s.labels["status"])
                     for s in _samples(http, "toolplex_http_request_duration_seconds_count"))
    assert ("POST", "/v1/sessions", "201") in routes
    assert ("POST", "/v1/sessions/{session_id}/runs", "200") in routes
    assert session_id not in text, "route templates label requests, never raw paths"
    assert "_created" not in text
    assert "quantile" not in text and "toolplex_tool_latency_seconds" not in text


async def test_two_processes_histograms_add_up(serve: Callable[..., Served]) -> None:
    servers = [serve(_agent()), serve(_agent())]
    for served in servers:
        await _one_run(served)
    total: Counter[str] = Counter()
    for served in servers:
        _, families = await _scrape(served)
        for sample in _samples(families["toolplex_tool_duration_seconds"],
                               "toolplex_tool_duration_seconds_bucket", tool="ticker"):
            total[sample.labels["le"]] += int(sample.value)
    assert total["+Inf"] == 2, "sum by (le) over processes counts every call"
    assert all(total[le] <= total["+Inf"] for le in total)


async def test_unknown_paths_share_one_label(serve: Callable[..., Served]) -> None:
    served = serve(_agent())
    async with httpx.AsyncClient(base_url=served.http) as client:
        for n in range(3):
            assert (await client.get(f"/no/such/{n}")).status_code == 404
    text, families = await _scrape(served)
    [unmatched] = _samples(families["toolplex_http_request_duration_seconds"],
                           "toolplex_http_request_duration_seconds_count", route="unmatched")
    assert unmatched.value == 3 and "/no/such" not in text


async def test_event_counts_match_the_log_and_each_scrape_adds_only_what_is_new(
        serve: Callable[..., Served]) -> None:
    served = serve(_agent())
    session_id = await _one_run(served)

    async def counted() -> dict[str, float]:
        _, families = await _scrape(served)
        return {s.labels["type"]: s.value for s in
                _samples(families["toolplex_events"], "toolplex_events_total")}

    logged = Counter(e.type for e in served.hub.store.get(session_id).log.replay(0))
    assert await counted() == logged, "one count per appended event, by type"
    assert await counted() == logged, "a second scrape counts nothing twice"
    await _one_run(served)
    again = await counted()
    assert again["run.started"] == 2 and again["tool.result"] == 2 * logged["tool.result"]

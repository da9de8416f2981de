"""The demo agent ``toolplex serve`` runs: free text gets help, a failed lookup does not
break the enrichment, and the agent's prompts reach a chat UI through ``GET /v1/agent``."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from toolplex import Agent, ToolError, create_app, tool
from toolplex.demo import demo_agent, enrichment
from toolplex.demo.agent import PROMPTS
from toolplex.testing import ScriptedModel


async def _events(agent: Agent, text: str) -> list[dict[str, Any]]:
    return [event.to_dict() async for event in agent.run(text)]


def _answer(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "text.delta")


async def test_free_text_gets_what_the_demo_can_do_and_starts_no_tool() -> None:
    events = await _events(demo_agent(), "hi, what is this?")
    assert not [e for e in events if e["type"] == "tool.call.start"], "no side effect"
    answer = _answer(events)
    for prompt in ("Enrich acme.com", "Search race", "Batch job", "Approve discount"):
        assert prompt in answer, f"the help names {prompt!r}"
    assert events[-1]["type"] == "run.finished"


async def test_a_failed_lookup_leaves_the_enrichment_answering_with_what_it_has() -> None:
    @tool(name="apollo", retries=0)
    async def broken_apollo(domain: str) -> dict[str, Any]:
        """Apollo, refusing."""
        raise ToolError("Apollo says no", status=403)

    tools = [broken_apollo, *(t for t in enrichment.TOOLS if t.name != "apollo")]
    events = await _events(Agent(tools=tools, model=ScriptedModel(enrichment.SCRIPT)),
                           "Enrich globex.io")
    assert events[-1]["type"] == "run.finished", events[-1]
    ends = {e["call_id"]: e for e in events if e["type"] == "tool.call.end"}
    names = {e["call_id"]: e["name"] for e in events if e["type"] == "tool.call.start"}
    emails = [ends[c]["args"]["email"] for c, n in names.items() if n == "verify_email"]
    assert emails == ["sales@globex.io"], "with no contact, the generic address is checked"
    answer = _answer(events)
    assert "No answer from Apollo" in answer and "Saved as hs_" in answer, answer


def test_get_agent_gives_the_prompts_and_tools_a_chat_ui_offers() -> None:
    with TestClient(create_app(demo_agent()), base_url="http://127.0.0.1") as client:
        body = client.get("/v1/agent").json()
    assert body["prompts"] == list(PROMPTS)
    assert {"apollo", "web_search", "batch_report"} <= set(body["tools"])
    with TestClient(create_app(Agent(tools=[enrichment.apollo])),
                    base_url="http://127.0.0.1") as client:
        assert client.get("/v1/agent").json() == {"prompts": [], "tools": ["apollo"]}

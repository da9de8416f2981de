"""`Agent(dependent_calls=True)`: `{"$from": ..., "path": ...}` chains calls in one response."""

from __future__ import annotations

import json
from typing import Any

import anyio

from toolplex import Agent, tool
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


@tool
async def lookup(domain: str) -> dict[str, Any]:
    """Find the company's decision maker."""
    return {"company": domain.split(".")[0], "contact": {"email": f"dana@{domain}"},
            "emails": [f"a@{domain}", f"b@{domain}"]}


@tool
async def verify(email: str) -> dict[str, Any]:
    """Check an email address."""
    return {"email": email, "deliverable": True}


@tool
async def broken(domain: str) -> str:
    """Always fails."""
    raise ValueError("no such company")


@tool
async def hang(name: str) -> str:
    """Never finishes on its own."""
    await anyio.sleep_forever()
    return name


EMAIL = {"$from": "find", "path": "contact.email"}
TOOLS = [lookup, verify, broken, hang]


def _one_response(*calls: Call) -> ScriptedModel:
    return ScriptedModel([Step(calls=list(calls)), Step(text="done")])


def _of(events: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    ids = {e["call_id"] for e in of_type(events, "tool.call.start") if e["name"] == name}
    return [e for e in of_type(events, kind) if e["call_id"] in ids]


async def _run(model: ScriptedModel, **options: Any) -> list[dict[str, Any]]:
    events = await collect(Agent(tools=TOOLS, model=model, dependent_calls=True, **options),
                           "go")
    check_protocol(events)
    return events


def _error(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (error,) = _of(events, "tool.error", name)
    return error["error"]  # type: ignore[no-any-return]


class TestChain:
    async def test_a_call_waits_for_the_one_it_names_and_gets_the_value_at_the_path(
            self) -> None:
        model = _one_response(Call("lookup", {"domain": "acme.com"}, id="find"),
                              Call("verify", {"email": EMAIL}))
        events = await _run(model)
        (result,) = _of(events, "tool.result", "verify")
        assert result["output"] == {"email": "dana@acme.com", "deliverable": True}
        (found,) = _of(events, "tool.result", "lookup")
        (started,) = _of(events, "tool.exec.started", "verify")
        assert found["seq"] < started["seq"], "it starts after the call it depends on ended"
        assert model.served == 2, "one response for the chain, one for the answer"

    async def test_call_end_keeps_the_model_args_and_exec_started_carries_resolved_ones(
            self) -> None:
        model = _one_response(Call("lookup", {"domain": "acme.com"}, id="find"),
                              Call("verify", {"email": EMAIL}))
        events = await _run(model)
        (end,) = _of(events, "tool.call.end", "verify")
        assert end["args"] == {"email": EMAIL}
        (started,) = _of(events, "tool.exec.started", "verify")
        assert started["args"] == {"email": "dana@acme.com"}
        (plain,) = _of(events, "tool.exec.started", "lookup")
        assert "args" not in plain, "a call without references does not repeat its args"
        second = model.requests[1]["messages"]
        (assistant,) = [m for m in second if m.get("tool_calls")]
        written = json.loads(assistant["tool_calls"][1]["function"]["arguments"])
        assert written == {"email": EMAIL}, "history keeps what the model wrote"

    async def test_a_reference_by_position_and_into_a_list_works_too(self) -> None:
        model = _one_response(Call("lookup", {"domain": "acme.com"}),
                              Call("verify", {"email": {"$from": 0, "path": "emails.1"}}))
        events = await _run(model)
        (result,) = _of(events, "tool.result", "verify")
        assert result["output"]["email"] == "b@acme.com"

    async def test_a_reference_may_name_a_call_written_after_it(self) -> None:
        model = _one_response(Call("verify", {"email": EMAIL}),
                              Call("lookup", {"domain": "acme.com"}, id="find"))
        events = await _run(model)
        (result,) = _of(events, "tool.result", "verify")
        assert result["output"]["email"] == "dana@acme.com"

    async def test_the_system_prompt_teaches_the_convention(self) -> None:
        model = _one_response(Call("lookup", {"domain": "acme.com"}))
        await _run(model, instructions="You enrich companies.")
        system = model.requests[0]["messages"][0]
        assert system["role"] == "system"
        assert system["content"].startswith("You enrich companies.")
        assert '"$from"' in system["content"]

    async def test_without_the_option_a_reference_is_just_an_invalid_argument(self) -> None:
        model = _one_response(Call("lookup", {"domain": "acme.com"}, id="find"),
                              Call("verify", {"email": EMAIL}))
        events = await collect(Agent(tools=TOOLS, model=model), "go")
        assert _error(events, "verify")["code"] == "invalid_args"
        assert all("$from" not in str(m.get("content")) for m in model.requests[0]["messages"])


class TestFailedDependency:
    async def test_an_unknown_reference_ends_the_call_with_dependency_failed(self) -> None:
        model = _one_response(Call("verify", {"email": {"$from": "nope"}}))
        error = _error(await _run(model), "verify")
        assert error["code"] == "dependency_failed"
        assert "'nope'" in error["message"]

    async def test_a_failed_dependency_fails_the_call_that_needs_it(self) -> None:
        model = _one_response(Call("broken", {"domain": "acme.com"}, id="find"),
                              Call("verify", {"email": EMAIL}))
        error = _error(await _run(model), "verify")
        assert error["code"] == "dependency_failed"
        assert "failed" in error["message"]

    async def test_a_cancelled_dependency_fails_the_call_that_needs_it(self) -> None:
        model = _one_response(Call("hang", {"name": "x"}, id="find"),
                              Call("verify", {"email": EMAIL}))
        agent = Agent(tools=TOOLS, model=model, dependent_calls=True)
        session = agent.session()
        events: list[dict[str, Any]] = []
        async for event in agent.run("go", session=session):
            events.append(event.to_dict())
            if event.type == "tool.exec.started":
                session.calls[event.call_id].cancel("user")  # type: ignore[attr-defined]
        check_protocol(events)
        (cancelled,) = of_type(events, "tool.cancelled")
        assert cancelled["reason"] == "user"
        error = _error(events, "verify")
        assert error["code"] == "dependency_failed"
        assert "cancelled" in error["message"]

    async def test_a_path_that_leads_nowhere_fails_the_call(self) -> None:
        model = _one_response(Call("lookup", {"domain": "acme.com"}, id="find"),
                              Call("verify", {"email": {"$from": "find", "path": "ceo.email"}}))
        error = _error(await _run(model), "verify")
        assert error["code"] == "dependency_failed"
        assert "ceo.email" in error["message"]

    async def test_cycles_are_refused(self) -> None:
        model = _one_response(
            Call("verify", {"email": {"$from": "b", "path": "email"}}, id="a"),
            Call("verify", {"email": {"$from": "a", "path": "email"}}, id="b"),
            Call("verify", {"email": {"$from": "c"}}, id="c"))
        with anyio.fail_after(30):
            events = await _run(model)
        errors = [e["error"] for e in of_type(events, "tool.error")]
        assert [e["code"] for e in errors] == ["dependency_failed"] * 3
        assert all("cycle" in e["message"] for e in errors)


class TestValidation:
    async def test_the_schema_checks_the_resolved_value(self) -> None:
        model = _one_response(Call("lookup", {"domain": "acme.com"}, id="find"),
                              Call("verify", {"email": {"$from": "find", "path": "contact"}}))
        events = await _run(model)
        error = _error(events, "verify")
        assert error["code"] == "invalid_args", "a dict is no email: checked once resolved"
        assert not _of(events, "tool.exec.started", "verify")

    async def test_a_malformed_reference_is_an_invalid_argument_at_once(self) -> None:
        model = _one_response(Call("lookup", {"domain": "acme.com"}, id="find"),
                              Call("verify", {"email": {"$from": "find", "pth": "x"}}))
        events = await _run(model)
        error = _error(events, "verify")
        assert error["code"] == "invalid_args"
        assert "$from" in error["message"]


class TestEarlyStart:
    async def test_a_call_whose_dependencies_are_known_starts_before_the_response_ends(
            self) -> None:
        # The pauses between argument fragments let the dispatched calls run (ready tasks
        # run before any timer): the check starts while the third call is still written.
        model = ScriptedModel([Step(calls=[Call("lookup", {"domain": "acme.com"}, id="find"),
                                           Call("verify", {"email": EMAIL}),
                                           Call("lookup", {"domain": "other.com"})],
                                    arg_delay=0.01),
                               Step(text="done")])
        events = await _run(model)
        (started,) = _of(events, "tool.exec.started", "verify")
        last_end = of_type(events, "tool.call.end")[-1]
        assert started["seq"] < last_end["seq"]


async def test_the_enrichment_example_runs_its_chain_from_one_response() -> None:
    from toolplex.demo import enrichment
    from toolplex.scripted import ScriptedModel

    model = ScriptedModel(enrichment.ONE_RESPONSE)
    agent = Agent(tools=enrichment.TOOLS, model=model, dependent_calls=True)
    events = await collect(agent, "Enrich acme.com")
    check_protocol(events)
    assert model.served == 2, "the calls in one response, then the answer"
    assert len(of_type(events, "tool.result")) == 6
    (verify_started,) = _of(events, "tool.exec.started", "verify_email")
    assert verify_started["args"] == {"email": "dana@acme.com"}
    (apollo,) = _of(events, "tool.result", "apollo")
    assert apollo["seq"] < verify_started["seq"]
    (write,) = _of(events, "tool.exec.started", "hubspot_upsert")
    assert write["args"]["company"]["email_deliverable"] is True
    assert "(verified)" in "".join(e["delta"] for e in of_type(events, "text.delta"))

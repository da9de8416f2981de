"""The B2B enrichment agent: research a company, verify a contact, record it.

Step 1 asks Apollo, LinkedIn and Clearbit at once (simulated upstreams, 100 to
400 ms); each call starts the moment its arguments are complete. Step 2
verifies the contact's email, which needs step 1's results. Step 3 writes to
HubSpot and notifies Slack in parallel; both are side effects, so neither
starts before the model's response has ended cleanly.

:data:`ONE_RESPONSE` does the same in one model response, with
``Agent(dependent_calls=True)``: the verification takes the email Apollo found
(``{"$from": 0, "path": "contact.email"}``) and the HubSpot record takes every
lookup's fields and the verification's verdict, so the round trips of steps 2
and 3 are saved. ``main`` runs that one.

Run it: ``python -m toolplex.demo.enrichment acme.com``
"""

from __future__ import annotations

import re
import sys
from typing import Any

import anyio

from ..exceptions import ToolError
from ..runner import Agent
from ..scripted import Call, Results, Step
from ..tools import tool
from ._show import show


def _latency(domain: str, base: float) -> float:
    """A stable spread around ``base`` per domain, like a real upstream's."""
    return base * (0.85 + (sum(map(ord, domain)) % 30) / 100)


@tool(upstream="apollo", timeout=5)
async def apollo(domain: str) -> dict[str, Any]:
    """Find the company and its decision maker in Apollo.

    Args:
        domain: The company's web domain, e.g. acme.com.
    """
    await anyio.sleep(_latency(domain, 0.4))
    name = domain.split(".")[0].capitalize()
    return {"company": name, "contact": {"name": "Dana Reyes", "title": "VP Sales",
                                         "email": f"dana@{domain}"},
            "summary": f"New lead: {name} ({domain}), Dana Reyes"}


@tool(upstream="linkedin", timeout=5)
async def linkedin(domain: str) -> dict[str, Any]:
    """Read the company's LinkedIn page: size and industry.

    Args:
        domain: The company's web domain.
    """
    await anyio.sleep(_latency(domain, 0.2))
    return {"employees": 120 + len(domain) * 37, "industry": "Industrial software"}


@tool(upstream="clearbit", timeout=5)
def clearbit(domain: str) -> dict[str, Any]:
    """Enrich the domain with Clearbit (a blocking SDK: runs in a worker thread).

    Args:
        domain: The company's web domain.
    """
    import time

    time.sleep(_latency(domain, 0.1))
    return {"funding": "Series B", "hq": "Lyon, France", "tech": ["Salesforce", "AWS"]}


@tool
async def verify_email(email: str) -> dict[str, Any]:
    """Check that an email address accepts mail.

    Args:
        email: The address to verify.
    """
    await anyio.sleep(0.15)
    if "@" not in email:
        raise ToolError(f"{email!r} is not an email address", status=422)
    return {"email": email, "deliverable": True}


@tool(side_effects=True)
async def hubspot_upsert(company: dict[str, Any]) -> dict[str, Any]:
    """Create or update the company in HubSpot.

    Args:
        company: The enriched company record.
    """
    await anyio.sleep(0.12)
    return {"hubspot_id": f"hs_{abs(hash(company.get('domain', ''))) % 10**6}", "ok": True}


@tool(side_effects=True)
async def slack_notify(channel: str, text: str) -> dict[str, Any]:
    """Post a message to a Slack channel.

    Args:
        channel: Where to post, e.g. #sales.
        text: The message.
    """
    await anyio.sleep(0.08)
    return {"channel": channel, "ok": True}


TOOLS = [apollo, linkedin, clearbit, verify_email, hubspot_upsert, slack_notify]


def _domain(results: Results) -> str:
    found = re.search(r"[\w-]+(?:\.[\w-]+)+", results.get("input", ""))
    return found.group(0).lower() if found else "acme.com"


def _found(results: Results, name: str) -> dict[str, Any]:
    """A call's output, or ``{}`` when it failed or was cancelled: the script answers
    with what it has instead of failing on a result a person cancelled."""
    value = results.get(name)
    if not isinstance(value, dict) or "error" in value or value.get("cancelled"):
        return {}
    if value.get("partial"):
        output = value.get("output")
        return output if isinstance(output, dict) else {}
    return value


def _contact(results: Results) -> dict[str, Any]:
    contact = _found(results, "apollo").get("contact")
    return contact if isinstance(contact, dict) else {}


def _company(results: Results) -> str:
    return str(_found(results, "apollo").get("company")
               or _domain(results).split(".")[0].capitalize())


def _email(results: Results) -> str:
    return str(_contact(results).get("email") or f"sales@{_domain(results)}")


def _record(r: Results) -> dict[str, Any]:
    return {"domain": _domain(r), "name": _company(r), **_found(r, "linkedin"),
            **_found(r, "clearbit"), "contact": _contact(r) or None}


def _lead(r: Results) -> str:
    who = _contact(r).get("name")
    return f"New lead: {_company(r)} ({_domain(r)})" + (f", {who}" if who else "")


def _summary(r: Results) -> str:
    """The answer, from whatever the calls returned; a missing part says so."""
    facts = []
    linkedin, clearbit = _found(r, "linkedin"), _found(r, "clearbit")
    if linkedin:
        facts.append(f"{linkedin['employees']} people in {linkedin['industry'].lower()}")
    if clearbit:
        facts.append(f"{clearbit['funding']}, HQ {clearbit['hq']}")
    missing = [label for name, label in (("apollo", "Apollo"), ("linkedin", "LinkedIn"),
                                         ("clearbit", "Clearbit")) if not _found(r, name)]
    text = f"{_company(r)} ({_domain(r)}): {', '.join(facts) or 'no company facts'}."
    if missing:
        text += f" No answer from {' or '.join(missing)} (cancelled or failed)."
    contact, verified = _contact(r), _found(r, "verify_email").get("deliverable")
    checked = "verified" if verified else "not verified"
    if contact:
        text += (f" Contact: {contact['name']}, {contact['title']}, {_email(r)} ({checked}).")
    else:
        text += f" No contact found; the generic address {_email(r)} is {checked}."
    saved = _found(r, "hubspot_upsert").get("hubspot_id")
    text += f" Saved as {saved};" if saved else " HubSpot was not updated;"
    text += " #sales was notified." if _found(r, "slack_notify") else " #sales was not told."
    return text


SCRIPT = [
    Step(
        text="I'll research it in Apollo, LinkedIn and Clearbit at once. ",
        token_delay=0.02, arg_delay=0.03,
        calls=[Call(name, lambda r: {"domain": _domain(r)})
               for name in ("apollo", "linkedin", "clearbit")],
    ),
    Step(text=lambda r: ("Found a decision maker; verifying the email. " if _contact(r) else
                         "Apollo gave no contact, so I'm verifying the generic address. "),
         token_delay=0.02, calls=[Call("verify_email", lambda r: {"email": _email(r)})]),
    Step(
        text=lambda r: ("Deliverable. " if _found(r, "verify_email").get("deliverable")
                        else "Not verified. ") + "Recording it in HubSpot and telling #sales. ",
        token_delay=0.02,
        calls=[
            Call("hubspot_upsert", lambda r: {"company": _record(r)}),
            Call("slack_notify", lambda r: {"channel": "#sales", "text": _lead(r)}),
        ],
    ),
    Step(text=_summary, token_delay=0.02),
]


def _ref(call: int, path: str = "") -> dict[str, Any]:
    return {"$from": call, "path": path} if path else {"$from": call}


ONE_RESPONSE = [
    Step(
        text="I'll research it, verify the contact and record it, all at once. ",
        token_delay=0.02, arg_delay=0.03,
        calls=[
            *(Call(name, lambda r: {"domain": _domain(r)})
              for name in ("apollo", "linkedin", "clearbit")),
            Call("verify_email", {"email": _ref(0, "contact.email")}),
            Call("hubspot_upsert", lambda r: {"company": {
                "domain": _domain(r), "name": _ref(0, "company"),
                "employees": _ref(1, "employees"), "industry": _ref(1, "industry"),
                "funding": _ref(2, "funding"), "hq": _ref(2, "hq"),
                "contact": _ref(0, "contact"), "email_deliverable": _ref(3, "deliverable")}}),
            Call("slack_notify", lambda r: {
                "channel": "#sales", "text": {"$from": 0, "path": "summary"}}),
        ],
    ),
    SCRIPT[-1],
]
"""The whole enrichment in one model response: lookups, then the check, then the writes."""


def main(argv: list[str] | None = None) -> None:
    """Run the agent on a domain and print its event stream."""
    from ..scripted import ScriptedModel

    domain = (argv if argv is not None else sys.argv[1:] or ["acme.com"])[0]
    agent = Agent(tools=TOOLS, model=ScriptedModel(ONE_RESPONSE), dependent_calls=True)
    anyio.run(show, agent.run(f"Enrich {domain}"))


if __name__ == "__main__":
    main()

"""Jobs end to end over the real server: worker, auto, webhook, human, polling, restart."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from standardwebhooks import Webhook
from websockets.asyncio.client import ClientConnection, connect

from toolplex import Agent, Job, Settings, tool
from toolplex.server.webhooks import callback_token, sign
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, of_type

from .apps import jobs_agent

SECRET = "whsec_" + base64.b64encode(b"toolplex-test-secret-0123456789").decode()


def _signed(body: bytes, *, secret: str = SECRET, msg_id: str = "msg_1",
            when: datetime | None = None) -> dict[str, str]:
    """Headers as a real Standard Webhooks sender (the reference package) makes them."""
    when = when or datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature, "content-type": "application/json"}


def hook(base: str, job_id: str) -> str:
    """The job's ``callback_url`` on ``base``: its webhook route and its callback token."""
    return f"{base}/v1/webhooks/{job_id}?token={callback_token(SECRET, job_id)}"


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(15):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def _until_job_turn_ends(ws: ClientConnection) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    job_runs: set[str] = set()
    while True:
        frame = await _recv(ws)
        if "seq" not in frame or frame["type"].startswith("stream."):
            continue
        events.append(frame)
        if frame["type"] == "run.started" and frame["trigger"] == "job":
            job_runs.add(frame["run_id"])
        if frame["type"] == "run.finished" and frame["run_id"] in job_runs:
            return events


@tool(mode="job")
async def crunch(n: int, job: Job) -> dict[str, Any]:
    """A worker job with progress."""
    for i in range(1, 4):
        await anyio.sleep(0.02)
        await job.progress(i, 3)
    return {"sum": n * 3}


AUTO_RUNS = 0


@tool(mode="auto", budget=0.1)
async def score(segment: str) -> dict[str, Any]:
    """Inline until its budget; then a job."""
    global AUTO_RUNS
    AUTO_RUNS += 1
    await anyio.sleep(0.4)
    return {"segment": segment, "score": 0.7}


@tool(mode="human")
async def approve(percent: int, job: Job) -> None:
    """A person decides."""


def _agent() -> Agent:
    base = jobs_agent()
    model = ScriptedModel(scripts={
        "job update": [Step(text="Reported: {{input}}")],
        "crunch": [Step(calls=[Call("crunch", {"n": 7})]), Step(text="Started.")],
        "score": [Step(calls=[Call("score", {"segment": "smb"})]), Step(text="Scoring.")],
        "approve": [Step(calls=[Call("approve", {"percent": 10})]), Step(text="Asked.")],
        "export": [Step(calls=[Call("export", {"table": "accounts"})]), Step(text="Asked.")],
    })
    return Agent(tools=[crunch, score, approve, *base.tools.values()], model=model)


async def _start(served: Any, text: str) -> tuple[str, str, ClientConnection]:
    sid, token = served.session()
    ws = await connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0")
    await _recv(ws)
    await ws.send(json.dumps({"type": "run.start", "input": text}))
    return sid, token, ws


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_worker_job_reports_progress_and_its_completion_starts_a_turn(serve) -> None:
    served = serve(_agent(), Settings(webhook_secret=SECRET))
    _sid, _, ws = await _start(served, "crunch it")
    async with ws:
        events = await _until_job_turn_ends(ws)
    check_protocol(events)
    kinds = [e["type"] for e in events]
    assert kinds.index("job.pending") < kinds.index("tool.result") < kinds.index("run.finished")
    assert [e["progress"] for e in of_type(events, "job.progress")] == [1, 2, 3]
    completed = of_type(events, "job.completed")[0]
    assert completed["output"] == {"sum": 21}
    assert '"sum": 21' in of_type(events, "run.started")[-1]["input"][0]["content"]


async def test_auto_tool_is_promoted_after_its_budget_and_runs_once(serve) -> None:
    served = serve(_agent(), Settings(webhook_secret=SECRET))
    before = AUTO_RUNS
    _, _, ws = await _start(served, "score smb")
    async with ws:
        events = await _until_job_turn_ends(ws)
    check_protocol(events)
    assert of_type(events, "job.pending")[0]["via"] == "worker"
    assert of_type(events, "job.completed")[0]["output"] == {"segment": "smb", "score": 0.7}
    assert AUTO_RUNS == before + 1, "promotion never restarts the work"


class TestWebhook:
    async def _pending(self, serve: Any) -> tuple[Any, str, str, str, ClientConnection]:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        sid, token, ws = await _start(served, "export accounts")
        while True:
            frame = await _recv(ws)
            if frame["type"] == "job.pending":
                return served, sid, token, frame["job_id"], ws

    async def test_a_correctly_signed_webhook_completes_the_job_once(self, serve) -> None:
        served, _, token, job_id, ws = await self._pending(serve)
        body = json.dumps({"rows": 1284}).encode()
        url = hook(served.http, job_id)
        async with httpx.AsyncClient() as client, ws:
            first = await client.post(url, content=body, headers=_signed(body))
            assert first.status_code == 200 and first.json() == {"ok": True}
            replay = await client.post(url, content=body, headers=_signed(body))
            assert replay.status_code == 200 and replay.json()["replayed"] is True
            events = await _until_job_turn_ends(ws)
            polled = await client.get(f"{served.http}/v1/jobs/{job_id}", headers=_auth(token))
        assert [e["output"] for e in of_type(events, "job.completed")] == [{"rows": 1284}]
        assert polled.json() == {"job_id": job_id, "status": "succeeded", "via": "webhook",
                                 "tool": "export", "output": {"rows": 1284}}

    async def test_forged_unsigned_stale_and_malformed_webhooks_are_401(self, serve) -> None:
        served, _, token, job_id, ws = await self._pending(serve)
        body = json.dumps({"rows": 1}).encode()
        url = hook(served.http, job_id)
        other = "whsec_" + base64.b64encode(b"not-the-secret-at-all-00000000").decode()
        stale = datetime.now(tz=UTC) - timedelta(minutes=10)
        attempts = {
            "forged": _signed(body, secret=other, msg_id="m1"),
            "unsigned": {"content-type": "application/json"},
            "stale": _signed(body, msg_id="m2", when=stale),
            "future": _signed(body, msg_id="m3", when=stale + timedelta(minutes=20)),
            "bad base64": {**_signed(body, msg_id="m4"), "webhook-signature": "v1,@@@not-b64"},
            "no version": {**_signed(body, msg_id="m5"), "webhook-signature": "garbage"},
            "bad timestamp": {**_signed(body, msg_id="m6"), "webhook-timestamp": "yesterday"},
            "tampered body": _signed(json.dumps({"rows": 2}).encode(), msg_id="m7"),
        }
        async with httpx.AsyncClient() as client, ws:
            for name, headers in attempts.items():
                answer = await client.post(url, content=body, headers=headers)
                assert answer.status_code == 401, name
                assert answer.json()["error"]["code"] == "bad_signature", name
            polled = await client.get(f"{served.http}/v1/jobs/{job_id}", headers=_auth(token))
        assert polled.json()["status"] == "pending", "nothing changed"

    async def test_several_signatures_and_non_utf8_bodies(self, serve) -> None:
        served, _, _, job_id, ws = await self._pending(serve)
        url = hook(served.http, job_id)
        raw = b"\xff\xfe not utf-8"  # the reference signer takes text only: sign by hand
        stamp = int(time.time())
        headers = {"webhook-id": "m8", "webhook-timestamp": str(stamp),
                   "webhook-signature": f"v1,AAAA {sign(SECRET, 'm8', stamp, raw)}"}
        async with httpx.AsyncClient() as client, ws:
            answer = await client.post(url, content=raw, headers=headers)
            assert answer.status_code == 400, "a signed but non-JSON body is a clear 4xx"
            body = json.dumps({"error": {"code": "export_failed", "message": "disk full"}})
            failed = await client.post(url, content=body,
                                       headers=_signed(body.encode(), msg_id="m9"))
            assert failed.status_code == 200
            events = await _until_job_turn_ends(ws)
        completed = of_type(events, "job.completed")[0]
        assert completed["status"] == "failed"
        assert completed["error"] == {"code": "export_failed", "message": "disk full"}

    async def test_unknown_and_finished_jobs_get_clear_4xx(self, serve) -> None:
        served, _, _, job_id, ws = await self._pending(serve)
        body = b'{"rows": 1}'
        async with httpx.AsyncClient() as client, ws:
            unknown = await client.post(hook(served.http, "j_nope"), content=body,
                                        headers=_signed(body, msg_id="u1"))
            assert unknown.status_code == 404
            url = hook(served.http, job_id)
            assert (await client.post(url, content=body,
                                      headers=_signed(body, msg_id="d1"))).status_code == 200
            late = await client.post(url, content=body, headers=_signed(body, msg_id="d2"))
            assert late.status_code == 409
            huge = b'{"x": "' + b"a" * (2 << 20) + b'"}'
            assert (await client.post(url, content=huge,
                                      headers=_signed(huge, msg_id="d3"))).status_code == 413


class TestWebhookBinding:
    """A delivery is applied once, to its own job, and only to a job a webhook finishes."""

    async def _two_pending(self, serve: Any, second: str = "export accounts") -> tuple[
            Any, str, str, str]:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        jobs = []
        for text in ("export accounts", second):
            _, token, ws = await _start(served, text)
            async with ws:
                while (frame := await _recv(ws))["type"] != "job.pending":
                    pass
            jobs.append(frame["job_id"])
        return served, token, jobs[0], jobs[1]

    async def test_a_refused_body_does_not_use_up_its_webhook_id(self, serve) -> None:
        served, _, job_id, _ = await self._two_pending(serve)
        raw = b"not json"
        stamp = int(time.time())
        headers = {"webhook-id": "msg_retry", "webhook-timestamp": str(stamp),
                   "webhook-signature": sign(SECRET, "msg_retry", stamp, raw)}
        async with httpx.AsyncClient() as client:
            refused = await client.post(hook(served.http, job_id), content=raw, headers=headers)
            assert refused.status_code == 400
            body = b'{"rows": 7}'
            retried = await client.post(hook(served.http, job_id), content=body,
                                        headers=_signed(body, msg_id="msg_retry"))
        assert retried.json() == {"ok": True}, "the sender's retry is applied, not 'replayed'"
        assert served.hub.jobs.store.job(job_id)["output"] == {"rows": 7}

    async def test_a_delivery_for_one_job_cannot_complete_another(self, serve) -> None:
        served, _, job_a, job_b = await self._two_pending(serve)
        body = b'{"rows": 1}'
        a_token = callback_token(SECRET, job_a)
        async with httpx.AsyncClient() as client:
            for url in (f"{served.http}/v1/webhooks/{job_b}?token={a_token}",
                        f"{served.http}/v1/webhooks/{job_b}"):
                moved = await client.post(url, content=body, headers=_signed(body))
                assert moved.status_code == 401
                assert moved.json()["error"]["code"] == "bad_callback_token"
        assert served.hub.jobs.store.job(job_b)["status"] == "pending"
        assert served.hub.jobs.store.job(job_a)["status"] == "pending"

    async def test_a_signed_webhook_cannot_finish_a_person_s_job(self, serve) -> None:
        served, _, _, human = await self._two_pending(serve, "approve 10%")
        body = b'{"approved": true}'
        async with httpx.AsyncClient() as client:
            answer = await client.post(hook(served.http, human), content=body,
                                       headers=_signed(body))
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "not_webhook"
        assert served.hub.jobs.store.job(human)["status"] == "pending"


# The demo tool starts its partner and lets it go (Popen without wait): not this test's concern.
@pytest.mark.filterwarnings("ignore::ResourceWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_the_demo_partner_calls_back_on_its_callback_url(serve, monkeypatch) -> None:
    from toolplex.demo import demo_agent

    monkeypatch.setenv("TOOLPLEX_WEBHOOK_SECRET", SECRET)  # the partner process reads it
    served = serve(demo_agent(), Settings(webhook_secret=SECRET))
    served.hub.jobs.callback_base = served.http  # (the port is known once it serves)
    _, _, ws = await _start(served, "export the accounts table")
    async with ws:
        events = await _until_job_turn_ends(ws)
    completed = of_type(events, "job.completed")[0]
    assert completed["status"] == "succeeded" and completed["output"]["rows"] == 1284


class TestHuman:
    async def test_a_person_completes_the_job_from_the_websocket(self, serve) -> None:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        _, _token, ws = await _start(served, "approve 10%")
        async with ws:
            while (frame := await _recv(ws))["type"] != "job.pending":
                pass
            job_id = frame["job_id"]
            await ws.send(json.dumps({"type": "job.complete", "job_id": job_id,
                                      "output": {"approved": True}}))
            events = await _until_job_turn_ends(ws)
            await ws.send(json.dumps({"type": "job.complete", "job_id": job_id,
                                      "output": {"approved": False}, "ref": "again"}))
            again = await _recv(ws)
        assert of_type(events, "job.completed")[0]["output"] == {"approved": True}
        assert again["type"] == "command.error" and again["error"]["code"] == "job_finished"

    async def test_rest_completion_needs_the_session_token(self, serve) -> None:
        served = serve(_agent(), Settings(webhook_secret=SECRET))
        _, token, ws = await _start(served, "approve 10%")
        async with ws:
            while (frame := await _recv(ws))["type"] != "job.pending":
                pass
            url = f"{served.http}/v1/jobs/{frame['job_id']}"
            async with httpx.AsyncClient() as client:
                assert (await client.get(url)).status_code == 401
                assert (await client.post(f"{url}/complete", json={"output": 1},
                                          headers=_auth("wrong"))).status_code == 401
                assert (await client.get(url, headers=_auth(token))).json()["status"] == "pending"
                done = await client.post(f"{url}/complete", json={"output": {"approved": True}},
                                         headers=_auth(token))
                assert done.status_code == 202
            events = await _until_job_turn_ends(ws)
        assert of_type(events, "job.completed")[0]["output"] == {"approved": True}


@pytest.mark.timeout(90)
async def test_a_job_started_before_a_crash_completes_after_a_restart(
    serve_process, tmp_path
) -> None:
    env = {"TOOLPLEX_DB": str(tmp_path / "toolplex.sqlite"), "TOOLPLEX_WEBHOOK_SECRET": SECRET}
    served = serve_process("tests.e2e.apps:jobs_app", env)
    async with httpx.AsyncClient() as client:
        created = (await client.post(f"{served.http}/v1/sessions")).json()
        sid, token = created["session_id"], created["token"]
        async with connect(f"{served.ws}/v1/sessions/{sid}/ws?token={token}&after=0") as ws:
            await _recv(ws)
            await ws.send(json.dumps({"type": "run.start", "input": "export accounts"}))
            seen = []
            while not seen or seen[-1]["type"] != "run.finished":
                frame = await _recv(ws)
                if "seq" in frame:
                    seen.append(frame)
        job_id = of_type(seen, "job.pending")[0]["job_id"]
        os.kill(served.pid, signal.SIGKILL)
        port = int(served.http.rsplit(":", 1)[1])
        restarted = serve_process("tests.e2e.apps:jobs_app", env, port=port)
        body = json.dumps({"rows": 99}).encode()
        answer = await client.post(hook(restarted.http, job_id), content=body,
                                   headers=_signed(body, msg_id="after-crash"))
        assert answer.status_code == 200
        after = seen[-1]["seq"]
        async with connect(f"{restarted.ws}/v1/sessions/{sid}/ws?token={token}"
                           f"&after={after}") as ws:
            hello = await _recv(ws)
            assert hello["head_seq"] >= after, "the log goes on from its seq"
            events = await _until_job_turn_ends(ws)
    assert [e["seq"] for e in events] == list(range(after + 1, after + 1 + len(events)))
    assert of_type(events, "job.completed")[0]["output"] == {"rows": 99}
    job_run = of_type(events, "run.started")[0]
    assert job_run["trigger"] == "job"
    assert of_type(events, "text.delta"), "the new turn ran on the restored history"

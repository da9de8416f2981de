"""Long-running tools as jobs: pending at once, completion starts a new turn."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anyio

from toolplex import Agent, Job, Session, ToolError, tool
from toolplex.events import BaseEvent
from toolplex.jobs import JobManager
from toolplex.store import Store
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


async def _wait_for(session: Session, predicate: Callable[[dict[str, Any]], bool],
                    seconds: float = 5) -> list[dict[str, Any]]:
    """Events of the session's log up to the first that satisfies ``predicate``."""
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(seconds):
        async for item in session.log.tail(0):
            assert isinstance(item, BaseEvent)
            seen.append(item.to_dict())
            if predicate(seen[-1]):
                return seen
    raise AssertionError("the log closed")


def _job_run_finished(event: dict[str, Any]) -> bool:
    return event["type"] == "run.finished" and event.get("run_id") in _JOB_RUNS


_JOB_RUNS: set[str] = set()


def _track(event: dict[str, Any]) -> bool:
    if event["type"] == "run.started" and event["trigger"] == "job":
        _JOB_RUNS.add(event["run_id"])
    return _job_run_finished(event)


def _model(call: Call) -> ScriptedModel:
    return ScriptedModel(scripts={
        "job update": [Step(text="The job is done: {{input}}")],
    }, default=[Step(calls=[call]), Step(text="Started; I'll report back.")], keep_requests=8)


class TestWorkerJob:
    async def test_call_ends_pending_then_completion_starts_a_job_turn(self) -> None:
        release = anyio.Event()

        @tool(mode="job")
        async def report(dataset: str, job: Job) -> dict[str, Any]:
            await job.progress(1, 2, "halfway")
            await release.wait()
            return {"rows": 42, "dataset": dataset}

        model = _model(Call("report", {"dataset": "sales"}))
        agent = Agent(tools=[report], model=model)
        session = agent.session()
        first = await collect(agent, "analyse sales", session=session)
        check_protocol(session.log.replay(0))
        pending = of_type(first, "job.pending")[0]
        result = of_type(first, "tool.result")[0]
        assert pending["via"] == "worker" and pending["call_id"] == result["call_id"]
        assert result["output"] == {"job_id": pending["job_id"], "status": "pending"}
        assert first[-1]["outcome"] == "success", "the run finished while the job works"
        release.set()
        events = await _wait_for(session, _track)
        check_protocol(events)
        progress = of_type(events, "job.progress")[0]
        assert (progress["progress"], progress["total"], progress["message"]) == (1, 2, "halfway")
        completed = of_type(events, "job.completed")[0]
        assert completed["status"] == "succeeded"
        assert completed["output"] == {"rows": 42, "dataset": "sales"}
        job_run = [e for e in events if e["type"] == "run.started"][-1]
        assert job_run["trigger"] == "job"
        assert "succeeded" in job_run["input"][0]["content"]
        last_request = model.requests[-1]["messages"]
        assert json.loads(last_request[-1]["content"].split(". ", 1)[1])["output"]["rows"] == 42

    async def test_a_failing_worker_job_reports_its_error_in_the_turn(self) -> None:
        @tool(mode="job")
        async def report(dataset: str) -> dict[str, Any]:
            raise ValueError("dataset is empty")

        agent = Agent(tools=[report], model=_model(Call("report", {"dataset": "x"})))
        session = agent.session()
        await collect(agent, "go", session=session)
        events = await _wait_for(session, _track)
        completed = of_type(events, "job.completed")[0]
        assert completed["status"] == "failed"
        assert "dataset is empty" in completed["error"]["message"]


class TestJobBodiesTakeTheExecutorsPath:
    """A job's body gets what an inline call's does: timeout, retries, breaker."""

    @staticmethod
    async def _completed(agent: Agent, session: Session, input: str) -> dict[str, Any]:
        seen = len(session.log.replay(0))
        await collect(agent, input, session=session)
        events = await _wait_for(session, lambda e: e["type"] == "job.completed"
                                 and e["seq"] > seen)
        return of_type(events, "job.completed")[-1]

    async def test_a_worker_job_whose_body_hangs_ends_at_its_timeout(self, fast) -> None:
        @tool(mode="job", timeout=5, retries=0)
        async def report(dataset: str) -> dict[str, Any]:
            await anyio.Event().wait()
            return {}

        agent = Agent(tools=[report], model=_model(Call("report", {"dataset": "x"})), clock=fast)
        completed = await self._completed(agent, agent.session(), "go")
        assert completed["status"] == "failed"
        assert completed["error"]["code"] == "timeout", "a hung job ends; it never hangs on"

    async def test_a_worker_jobs_work_is_bounded_by_its_ttl_by_default(self, fast) -> None:
        @tool(mode="job", retries=0)
        async def report(dataset: str) -> dict[str, Any]:
            await anyio.Event().wait()
            return {}

        agent = Agent(tools=[report], model=_model(Call("report", {"dataset": "x"})),
                      clock=fast, jobs=JobManager(ttl=30))
        completed = await self._completed(agent, agent.session(), "go")
        assert (completed["status"], completed["error"]["code"]) == ("failed", "timeout")
        assert "30 s" in completed["error"]["message"], "the TTL, not the 10 s inline default"

    async def test_a_job_bodys_transient_failure_is_retried(self, fast) -> None:
        attempts = 0

        @tool(mode="job")
        async def report(dataset: str) -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise ToolError("warehouse busy", status=503)
            return {"rows": 7}

        agent = Agent(tools=[report], model=_model(Call("report", {"dataset": "x"})), clock=fast)
        completed = await self._completed(agent, agent.session(), "go")
        assert (completed["status"], completed["output"]) == ("succeeded", {"rows": 7})
        assert attempts == 2, "a 503 is transient: retried with the same backoff"

    async def test_job_failures_open_the_tools_breaker(self, fast) -> None:
        @tool(mode="job", retries=0, breaker=2)
        async def report(dataset: str) -> dict[str, Any]:
            raise ValueError("corrupt dataset")

        agent = Agent(tools=[report], model=_model(Call("report", {"dataset": "x"})), clock=fast)
        session = agent.session()
        for attempt in ("first", "second"):
            completed = await self._completed(agent, session, f"{attempt} go")
            assert completed["status"] == "failed"
        assert not agent.executor.breaker_for(session, report).allows_calls
        assert "report" not in [s["function"]["name"] for s in agent.tool_specs(session)], (
            "an open circuit hides the job tool from the model, as an inline tool's does")


class TestAuto:
    async def test_overrunning_its_budget_becomes_a_job_without_restarting(self, fast) -> None:
        runs = 0
        release = anyio.Event()

        @tool(mode="auto", budget=3.0)
        async def score(segment: str) -> dict[str, Any]:
            nonlocal runs
            runs += 1
            await release.wait()
            return {"segment": segment, "score": 0.8}

        agent = Agent(tools=[score], model=_model(Call("score", {"segment": "smb"})), clock=fast)
        session = agent.session()
        first = await collect(agent, "score smb", session=session)
        check_protocol(session.log.replay(0))
        assert of_type(first, "tool.exec.started")[0]["timeout_ms"] == 3000
        assert of_type(first, "job.pending")[0]["via"] == "worker"
        assert of_type(first, "tool.result")[0]["output"]["status"] == "pending"
        release.set()
        events = await _wait_for(session, _track)
        assert of_type(events, "job.completed")[0]["output"] == {"segment": "smb", "score": 0.8}
        assert runs == 1, "promotion never restarts the work"

    async def test_finishing_within_budget_stays_inline(self) -> None:
        @tool(mode="auto", budget=3.0)
        async def score(segment: str) -> dict[str, Any]:
            return {"score": 0.5}

        events = await collect(Agent(tools=[score], model=_model(Call("score", {"segment": "x"}))),
                               "go")
        check_protocol(events)
        assert not of_type(events, "job.pending")
        assert of_type(events, "tool.result")[0]["output"] == {"score": 0.5}


class TestHumanAndWebhook:
    async def test_a_person_completes_a_human_job_once(self) -> None:
        notified: list[str] = []

        @tool(mode="human")
        async def approve_discount(percent: int, job: Job) -> None:
            notified.append(job.id)

        agent = Agent(tools=[approve_discount],
                      model=_model(Call("approve_discount", {"percent": 15})))
        session = agent.session()
        first = await collect(agent, "discount", session=session)
        job_id = of_type(first, "job.pending")[0]["job_id"]
        assert notified == [job_id] and of_type(first, "job.pending")[0]["via"] == "human"
        assert agent.jobs.complete(job_id, "succeeded", output={"approved": True})
        assert not agent.jobs.complete(job_id, "succeeded", output={"approved": False}), (
            "a job ends once")
        events = await _wait_for(session, _track)
        assert [e["output"] for e in of_type(events, "job.completed")] == [{"approved": True}]
        assert len([e for e in events if e["type"] == "run.started"]) == 2, "handled once"

    async def test_webhook_body_failure_fails_the_call(self, fast) -> None:
        @tool(mode="webhook")
        async def start_export(table: str, job: Job) -> None:
            raise ConnectionRefusedError("partner is down")

        agent = Agent(tools=[start_export], model=_model(Call("start_export", {"table": "t"})),
                      clock=fast)
        session = agent.session()
        await collect(agent, "go", session=session)
        events = [e.to_dict() for e in session.log.replay(0)]
        check_protocol(events)
        error = of_type(events, "tool.error")[0]["error"]
        assert (error["code"], error["last"]["code"]) == ("retries_exhausted", "upstream"), (
            "a transient failure of the body is retried like an inline call's")
        assert of_type(events, "job.completed")[0]["status"] == "failed"

    async def test_webhook_job_gets_its_callback_url(self) -> None:
        urls: list[str] = []

        @tool(mode="webhook")
        async def start_export(table: str, job: Job) -> None:
            urls.append(job.callback_url)

        agent = Agent(tools=[start_export], model=_model(Call("start_export", {"table": "t"})),
                      jobs=JobManager(callback_base="https://agents.example/"))
        events = await collect(agent, "go")
        job_id = of_type(events, "job.pending")[0]["job_id"]
        assert urls == [f"https://agents.example/v1/webhooks/{job_id}"]


async def test_completion_while_a_run_is_active_waits_for_its_end() -> None:
    @tool(mode="human")
    async def ask(question: str, job: Job) -> None: ...

    busy = anyio.Event()
    go_on = anyio.Event()

    @tool
    async def slow() -> str:
        busy.set()
        await go_on.wait()
        return "done"

    model = ScriptedModel(scripts={"job update": [Step(text="noted")],
                                   "second": [Step(calls=[Call("slow")]), Step(text="ok")]},
                          default=[Step(calls=[Call("ask", {"question": "?"})]),
                                   Step(text="asked")])
    agent = Agent(tools=[ask, slow], model=model)
    session = agent.session()
    first = await collect(agent, "first", session=session)
    job_id = of_type(first, "job.pending")[0]["job_id"]
    async with anyio.create_task_group() as tg:
        run = agent.start(session, "second", tg)
        await busy.wait()
        agent.jobs.complete(job_id, "succeeded", output="yes")
        await anyio.wait_all_tasks_blocked()
        assert list(session.runs) == [run.id], "no job turn while a run is active"
        go_on.set()
    events = await _wait_for(session, _track)
    check_protocol(events)
    kinds = [(e["type"], e.get("trigger")) for e in events if e["type"].startswith("run.")]
    assert kinds[-2:] == [("run.started", "job"), ("run.finished", None)]
    second_end = max(i for i, e in enumerate(events) if e["type"] == "run.finished"
                     and e["run_id"] == run.id)
    job_start = next(i for i, e in enumerate(events) if e.get("trigger") == "job")
    assert second_end < job_start


async def test_check_job_is_offered_while_a_job_is_pending() -> None:
    @tool(mode="human")
    async def ask(question: str, job: Job) -> None: ...

    model = ScriptedModel([
        Step(calls=[Call("ask", {"question": "?"})]),
        Step(calls=[Call("check_job", {"job_id": "{{ask.job_id}}"})]),
        Step(text="still waiting"),
    ], keep_requests=8)
    agent = Agent(tools=[ask], model=model)
    events = await collect(agent, "go")
    check_protocol(events)
    offered = [[t["function"]["name"] for t in r.get("tools", [])] for r in model.requests]
    assert offered == [["ask"], ["ask", "check_job"], ["ask", "check_job"]]
    status = of_type(events, "tool.result")[1]["output"]
    assert status["status"] == "pending" and status["via"] == "human"


async def test_jobs_past_their_ttl_expire_and_start_a_turn() -> None:
    @tool(mode="human")
    async def ask(question: str, job: Job) -> None: ...

    agent = Agent(tools=[ask], model=_model(Call("ask", {"question": "?"})),
                  jobs=JobManager(ttl=60))
    session = agent.session()
    await collect(agent, "go", session=session)
    assert agent.jobs.expire(now=time.time() + 61)
    events = await _wait_for(session, _track)
    completed = of_type(events, "job.completed")[0]
    assert completed["status"] == "expired" and completed["error"]["code"] == "expired"


async def test_worker_jobs_interrupted_by_a_restart_fail_or_rerun(tmp_path) -> None:
    path = str(tmp_path / "jobs.sqlite")

    @tool(mode="job")
    async def once(x: int) -> int:
        await anyio.sleep_forever()
        return x

    @tool(mode="job", rerun_on_restart=True)
    async def again(x: int) -> int:
        return x * 2

    store = Store(path)
    before = Agent(tools=[once, again], jobs=JobManager(store),
                   model=ScriptedModel([Step(calls=[Call("once", {"x": 1}),
                                                    Call("again", {"x": 2})]),
                                        Step(text="ok")]))
    for row in ({"id": "j_a", "tool": "once"}, {"id": "j_b", "tool": "again"}):
        store.insert_job({**row, "session_id": "s_1", "call_id": "c", "via": "worker",
                          "args": {"x": 21}, "status": "running", "created": time.time(),
                          "expires": time.time() + 60})
    store.close()
    after = Agent(tools=[once, again], jobs=JobManager(Store(path)))
    after.jobs.recover()
    with anyio.fail_after(5):
        while after.jobs.store.job("j_b")["status"] == "running":  # type: ignore[index]
            await anyio.sleep(0.01)
    assert after.jobs.store.job("j_a")["error"]["code"] == "interrupted"  # type: ignore[index]
    assert after.jobs.store.job("j_b")["output"] == 42  # type: ignore[index]
    del before


class _StalledSharedStore(Store):
    """A shared job store (as Redis is) whose queries and writes of a run's path wait
    ``stall`` seconds each: open jobs, a job's row, its insert, progress and end."""

    shared = True

    def __init__(self, stall: float) -> None:
        super().__init__()
        self.stall = stall
        self.asked: list[str] = []

    def _wait(self, what: str) -> None:
        self.asked.append(what)
        time.sleep(self.stall)

    def jobs(self, **query: Any) -> list[dict[str, Any]]:  # type: ignore[override]
        if query.get("open_only"):  # (a delivery's own query is the Redis backend's)
            self._wait("open jobs")
        return super().jobs(**query)

    def job(self, job_id: str) -> dict[str, Any] | None:
        self._wait("job")
        return super().job(job_id)

    def insert_job(self, row: dict[str, Any]) -> None:
        self._wait("insert")
        super().insert_job(row)

    def progress(self, job_id: str, progress: float, total: float | None,
                 message: str | None) -> None:
        self._wait("progress")
        super().progress(job_id, progress, total, message)

    def finish(self, job_id: str, status: str, output: Any,
               error: dict[str, Any] | None) -> bool:
        self._wait("finish")
        return super().finish(job_id, status, output, error)


class _LoopLag:
    """The longest the event loop stood still while the block ran."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def tick(self) -> None:
        while True:
            before = time.monotonic()
            await anyio.sleep(0.02)
            self.worst = max(self.worst, time.monotonic() - before - 0.02)


async def test_a_stalled_shared_job_store_never_freezes_the_loop_between_steps() -> None:
    """Before each model step a run asks whether a job of its session is open; with a
    shared store that question waits on the network, so it must not hold the loop."""

    @tool
    async def ping() -> str:
        """Answer at once."""
        return "pong"

    store = _StalledSharedStore(stall=1.5)
    agent = Agent(tools=[ping], jobs=JobManager(store),
                  model=ScriptedModel([Step(calls=[Call("ping", {})]), Step(text="done")]))
    lag = _LoopLag()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lag.tick)
            events = [e.to_dict() async for e in agent.run("go")]
            tg.cancel_scope.cancel()
    finally:
        await agent.aclose()
    check_protocol(events)
    assert events[-1]["outcome"] == "success"
    assert store.asked == ["open jobs", "open jobs"], "both steps asked the store"
    assert lag.worst < 0.75, f"the loop stood still for {lag.worst:.2f} s"


async def test_a_stalled_shared_job_store_never_freezes_the_loop_for_a_jobs_life() -> None:
    """A job's creation, its progress and its end write to the store from the run's and
    the job's own tasks; with a shared store each waits on the network, off the loop."""

    @tool(mode="job", retries=0)
    async def report(dataset: str, job: Job) -> dict[str, Any]:
        """A job that reports progress twice."""
        await job.progress(1, 2, "half")
        await job.progress(2, 2, "all")
        return {"rows": 2}

    store = _StalledSharedStore(stall=1.0)
    agent = Agent(tools=[report], jobs=JobManager(store),
                  model=_model(Call("report", {"dataset": "x"})))
    session = agent.session()
    lag = _LoopLag()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lag.tick)
            await collect(agent, "go", session=session)
            await _wait_for(session, _track, 30)  # the job's turn has ended
            tg.cancel_scope.cancel()
    finally:
        await agent.aclose()
    events = [e.to_dict() for e in session.log.replay(0)]
    check_protocol(events)
    assert [e["progress"] for e in of_type(events, "job.progress")] == [1, 2]
    assert of_type(events, "job.completed")[0]["output"] == {"rows": 2}
    assert {"insert", "progress", "finish"} <= set(store.asked)
    assert lag.worst < 0.75, f"the loop stood still for {lag.worst:.2f} s"

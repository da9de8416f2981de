"""``AgUiEncoder``: one run's toolplex events as AG-UI 1.0 events, for ``POST /ag-ui``.

A per-connection encoder over the session's log: it translates the run's events one by
one and never reorders them:

=============================  ===========================================================
toolplex                       AG-UI
=============================  ===========================================================
``run.started``                ``RUN_STARTED`` (``protocolVersion``; ids in ``metadata``)
``step.started/finished``      ``STEP_STARTED/FINISHED`` (``stepName`` "step N")
``text.start/delta/end``       ``TEXT_MESSAGE_START/CONTENT/END``
``reasoning.start``            ``REASONING_START`` + ``REASONING_MESSAGE_START``
``reasoning.delta``            ``REASONING_MESSAGE_CONTENT``
``reasoning.end``              ``REASONING_MESSAGE_END`` + ``REASONING_END``
``tool.call.start/delta/end``  ``TOOL_CALL_START/ARGS/END`` (``parentMessageId``)
the call's terminal event      one ``TOOL_CALL_RESULT``: what the model was told
queue, attempts, output,       ``ACTIVITY_SNAPSHOT`` then ``ACTIVITY_DELTA`` on one
retries, timeouts, short       activity message per call (``toolplex_call``)
circuit, jobs
``tool.circuit_open``          ``CUSTOM`` ``toolplex.circuit_open``
``run.finished``               ``RUN_FINISHED``: outcome success, cancelled, or interrupt
                               while a human job of the run is pending
``run.error``                  ``RUN_ERROR``
=============================  ===========================================================
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import (
    PROTOCOL_VERSION,
    ActivityDeltaEvent,
    ActivitySnapshotEvent,
    BaseEvent,
    CustomEvent,
    Interrupt,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)

from ..calls import Outcome

ACTIVITY_TYPE = "toolplex_call"
"""The ``activityType`` of the activity message each executed call gets."""

@dataclass
class _Call:
    name: str
    args_open: bool = True
    activity: dict[str, Any] | None = None


@dataclass
class AgUiEncoder:
    """Translates one run's toolplex frames (wire dicts, in log order) into AG-UI events.

    Args:
        thread_id: The AG-UI thread, echoed on run events.
        run_id: The AG-UI run id the client chose, echoed on run events.
    """

    thread_id: str
    run_id: str
    _text: set[str] = field(default_factory=set)
    _reasoning: set[str] = field(default_factory=set)
    _steps: set[str] = field(default_factory=set)
    _calls: dict[str, _Call] = field(default_factory=dict)
    _job_calls: dict[str, str] = field(default_factory=dict)
    _human: dict[str, tuple[str, str]] = field(default_factory=dict)

    def feed(self, frame: dict[str, Any]) -> list[BaseEvent]:
        """The AG-UI events for one frame (often one, sometimes none or a few)."""
        kind, ts = frame["type"], frame["ts"]
        out = self._run_level(kind, frame, ts)
        if out is None:
            out = self._call_level(kind, frame, ts)
        return out

    def _run_level(self, kind: str, f: dict[str, Any], ts: int) -> list[BaseEvent] | None:
        if kind == "run.started":
            return [RunStartedEvent(
                thread_id=self.thread_id, run_id=self.run_id, protocol_version=PROTOCOL_VERSION,
                timestamp=ts,
                metadata={"toolplex": {"sessionId": f["session_id"], "runId": f["run_id"]}})]
        if kind in ("step.started", "step.finished"):
            name = f"step {f['step']}"
            if kind == "step.started":
                self._steps.add(name)
                return [StepStartedEvent(step_name=name, timestamp=ts)]
            self._steps.discard(name)
            return [StepFinishedEvent(step_name=name, timestamp=ts)]
        if kind == "text.start":
            self._text.add(f["message_id"])
            return [TextMessageStartEvent(message_id=f["message_id"], role="assistant",
                                          timestamp=ts)]
        if kind == "text.delta":
            if not f["delta"] or f["message_id"] not in self._text:
                return []
            return [TextMessageContentEvent(message_id=f["message_id"], delta=f["delta"],
                                            timestamp=ts)]
        if kind == "text.end":
            self._text.discard(f["message_id"])
            return [TextMessageEndEvent(message_id=f["message_id"], timestamp=ts)]
        if kind.startswith("reasoning."):
            return self._reasoning_events(kind, f["message_id"], f, ts)
        if kind == "tool.circuit_open":
            return [CustomEvent(name="toolplex.circuit_open", timestamp=ts,
                                value={"tool": f["tool"], "failures": f["failures"]})]
        if kind == "run.finished":
            return [*self._close(ts), RunFinishedEvent(
                thread_id=self.thread_id, run_id=self.run_id, outcome=self._outcome(f),
                usage=_usage(f.get("usage")), timestamp=ts)]
        if kind == "run.error":
            error = f["error"]
            return [*self._close(ts), RunErrorEvent(message=error["message"], code=error["code"],
                                                    timestamp=ts)]
        return None

    def _reasoning_events(self, kind: str, message_id: str, f: dict[str, Any],
                          ts: int) -> list[BaseEvent]:
        # One reasoning span holding one reasoning message, both named by the message id.
        if kind == "reasoning.start":
            self._reasoning.add(message_id)
            return [ReasoningStartEvent(message_id=message_id, timestamp=ts),
                    ReasoningMessageStartEvent(message_id=message_id, role="reasoning",
                                               timestamp=ts)]
        if message_id not in self._reasoning:
            return []
        if kind == "reasoning.delta":
            if not f["delta"]:
                return []
            return [ReasoningMessageContentEvent(message_id=message_id, delta=f["delta"],
                                                 timestamp=ts)]
        self._reasoning.discard(message_id)
        return [ReasoningMessageEndEvent(message_id=message_id, timestamp=ts),
                ReasoningEndEvent(message_id=message_id, timestamp=ts)]

    def _call_level(self, kind: str, f: dict[str, Any], ts: int) -> list[BaseEvent]:
        if kind.startswith("job.") and kind != "job.pending":
            return self._job_update(kind, f, ts)
        call_id = f.get("call_id")
        if call_id is None:
            return []
        if kind == "tool.call.start":
            self._calls[call_id] = _Call(f["name"])
            return [ToolCallStartEvent(tool_call_id=call_id, tool_call_name=f["name"],
                                       parent_message_id=f["message_id"], timestamp=ts)]
        call = self._calls.setdefault(call_id, _Call("", args_open=False))
        if kind == "tool.call.delta":
            if not f["delta"] or not call.args_open:
                return []
            return [ToolCallArgsEvent(tool_call_id=call_id, delta=f["delta"], timestamp=ts)]
        if kind == "tool.call.end":
            return self._end_args(call_id, call, ts)
        if kind in ("tool.result", "tool.error", "tool.cancelled"):
            return self._terminal(kind, call_id, call, f, ts)
        if kind == "job.pending":
            self._job_calls[f["job_id"]] = call_id
            if f["via"] == "human":
                self._human[f["job_id"]] = (call_id, call.name)
        return self._activity(call_id, call, _progress_ops(kind, f), ts)

    def _end_args(self, call_id: str, call: _Call, ts: int) -> list[BaseEvent]:
        if not call.args_open:
            return []
        call.args_open = False
        return [ToolCallEndEvent(tool_call_id=call_id, timestamp=ts)]

    def _terminal(self, kind: str, call_id: str, call: _Call, f: dict[str, Any],
                  ts: int) -> list[BaseEvent]:
        # [protocol] exactly one terminal event per call: one TOOL_CALL_RESULT, also for a
        # cancelled call (its tool message keeps the history valid). A call cut off before
        # its arguments ended is closed first.
        if kind == "tool.result":
            outcome = Outcome("result", output=f["output"], partial=f.get("partial", False),
                              stopped_by=f.get("stopped_by"))
            ops: list[tuple[str, Any]] = [
                ("/status", "pending" if _is_pending(f["output"]) else "done")]
            ops += [(f"/{key}", True) for key in ("partial", "cached") if f.get(key)]
        elif kind == "tool.error":
            outcome = Outcome("error", error=f["error"])
            ops = [("/status", "error"), ("/error", f["error"])]
        else:
            outcome = Outcome("cancelled", reason=f["reason"], by_call_id=f.get("by_call_id"),
                              output=f.get("partial_output"))
            ops = [("/status", "cancelled"), ("/reason", f["reason"])]
            ops += [("/byCallId", f["by_call_id"])] if f.get("by_call_id") else []
        events = self._end_args(call_id, call, ts)
        if call.activity is not None:
            events += self._activity(call_id, call, ops, ts)
        events.append(ToolCallResultEvent(message_id=f"{call_id}-result", tool_call_id=call_id,
                                          content=outcome.for_model(), role="tool", timestamp=ts))
        return events

    def _job_update(self, kind: str, f: dict[str, Any], ts: int) -> list[BaseEvent]:
        call_id = self._job_calls.get(f["job_id"])
        if call_id is None:
            return []
        if kind == "job.completed":
            self._human.pop(f["job_id"], None)
            ops: list[tuple[str, Any]] = [("/job/status", f["status"])]
            ops += [(f"/job/{k}", f[k]) for k in ("output", "error") if f.get(k) is not None]
        else:
            ops = [(f"/job/{k}", f[k]) for k in ("progress", "total", "message")
                   if f.get(k) is not None]
        return self._activity(call_id, self._calls[call_id], ops, ts)

    def _activity(self, call_id: str, call: _Call, ops: list[tuple[str, Any]],
                  ts: int) -> list[BaseEvent]:
        if not ops:
            return []
        message_id = f"{call_id}-activity"
        # The events keep copies: the state goes on changing after they are made.
        if call.activity is None:
            call.activity = {"callId": call_id, "tool": call.name, "status": "running",
                             "output": [], "retries": [], "timeouts": []}
            _apply(call.activity, copy.deepcopy(ops))
            return [ActivitySnapshotEvent(message_id=message_id, activity_type=ACTIVITY_TYPE,
                                          content=copy.deepcopy(call.activity), timestamp=ts)]
        _apply(call.activity, copy.deepcopy(ops))
        patch = [{"op": "add", "path": path, "value": value} for path, value in ops]
        return [ActivityDeltaEvent.model_validate({
            "messageId": message_id, "activityType": ACTIVITY_TYPE, "patch": patch,
            "timestamp": ts})]

    def _close(self, ts: int) -> list[BaseEvent]:
        """Close what is still open before the run's end (the client verifies it)."""
        events: list[BaseEvent] = []
        for message_id in sorted(self._reasoning):
            events += self._reasoning_events("reasoning.end", message_id, {}, ts)
        events += [TextMessageEndEvent(message_id=m, timestamp=ts) for m in sorted(self._text)]
        for call_id, call in self._calls.items():
            events += self._end_args(call_id, call, ts)
        events += [StepFinishedEvent(step_name=s, timestamp=ts) for s in sorted(self._steps)]
        self._text.clear()
        self._steps.clear()
        return events

    def _outcome(self, f: dict[str, Any]) -> Any:
        if f["outcome"] == "cancelled":
            return RunFinishedCancelledOutcome()
        if self._human:
            return RunFinishedInterruptOutcome(interrupts=[
                Interrupt(id=job_id, reason="human_job", tool_call_id=call_id,
                          message=f"{tool} waits for a person: resume with its output")
                for job_id, (call_id, tool) in self._human.items()])
        return RunFinishedSuccessOutcome()


def _progress_ops(kind: str, f: dict[str, Any]) -> list[tuple[str, Any]]:
    """Activity patch operations (path, value) for a call's non-terminal event."""
    if kind == "tool.queued":
        return [("/status", "queued"), ("/upstream", f["upstream"])]
    if kind == "tool.exec.started":
        return [("/status", "running"), ("/attempt", f["attempt"]),
                ("/timeoutMs", f["timeout_ms"])]
    if kind == "tool.output.delta":
        return [("/output/-", f["data"])]
    if kind == "tool.retrying":
        retry = {"attempt": f["attempt"], "delayMs": f["delay_ms"], "reason": f["reason"]}
        if f.get("error") is not None:
            retry["error"] = f["error"]
        # [protocol] a client drops the failed attempt's partial output.
        return [("/output", []), ("/retries/-", retry), ("/status", "retrying")]
    if kind == "tool.timeout":
        return [("/timeouts/-", {"attempt": f["attempt"], "timeoutMs": f["timeout_ms"],
                                 "willRetry": f["will_retry"]})]
    if kind == "tool.short_circuit":
        return [("/shortCircuit", {"cancelledCallIds": f["cancelled_call_ids"]})]
    if kind == "job.pending":
        return [("/status", "pending"),
                ("/job", {"jobId": f["job_id"], "via": f["via"], "status": "pending"})]
    return []


def _apply(content: dict[str, Any], ops: list[tuple[str, Any]]) -> None:
    """Apply our own ``add`` operations (object members and ``/-`` appends) locally."""
    for path, value in ops:
        *parents, last = path.strip("/").split("/")
        target: Any = content
        for part in parents:
            target = target[part]
        if last == "-":
            target.append(value)
        else:
            target[last] = value


def _is_pending(output: Any) -> bool:
    return isinstance(output, dict) and output.get("status") == "pending" and "job_id" in output


def _usage(usage: dict[str, Any] | None) -> list[TokenUsage] | None:
    if not usage:
        return None
    # Chat Completions counts prompt/completion tokens, Responses input/output tokens.
    return [TokenUsage(input_tokens=usage.get("prompt_tokens", usage.get("input_tokens")),
                       output_tokens=usage.get("completion_tokens",
                                               usage.get("output_tokens")),
                       total_tokens=usage.get("total_tokens"))]

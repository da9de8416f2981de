"""``POST /ag-ui``: the AG-UI 1.0 endpoint.

A ``RunAgentInput`` starts a run in the session its ``threadId`` stands for (see
:mod:`.conversations`); the response streams that run as AG-UI events over SSE (see
:class:`~.ag_ui_encoder.AgUiEncoder` for the mapping) and ends after its terminal event.
Only the last user message is read (a new session takes the whole conversation: the
history lives on the server); ``tools``, ``context``, ``state`` and ``forwardedProps`` are
accepted and not used (the agent's tools run on the server).

A run that ends on an interrupt (a pending human job) is resumed with ``resume:
[{interruptId: <job_id>, status: "resolved", payload: <the job's output>}]`` (or
``status: "cancelled"``): the jobs are completed and the response streams the run their
completion starts (its messages are not read). Answering a person's job needs that
session's token (the thread is a session made by ``POST /v1/sessions``) or an API key:
knowing a thread id is not being the person asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from ag_ui.core import (
    AssistantMessage,
    DeveloperMessage,
    Message,
    ResumeEntry,
    RunAgentInput,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from starlette.requests import Request
from starlette.responses import Response

from ..exceptions import ProtocolError
from ..runner import Run
from ..session import Session
from .ag_ui_encoder import AgUiEncoder
from .auth import api_key_ok, token_of
from .conversations import RunFrames, open_conversation, refusal, turn_input
from .hub import Hub
from .responses import event_stream


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content or []
    return "\n".join(p.text for p in parts if getattr(p, "type", None) == "text")


def chat_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """AG-UI messages as OpenAI chat messages (activity and reasoning messages left out)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, (UserMessage, SystemMessage, DeveloperMessage)):
            role = "user" if isinstance(message, UserMessage) else "system"
            out.append({"role": role, "content": _text(message.content)})
        elif isinstance(message, AssistantMessage):
            item: dict[str, Any] = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                item["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.function.name, "arguments": c.function.arguments}}
                    for c in message.tool_calls]
            out.append(item)
        elif isinstance(message, ToolMessage):
            out.append({"role": "tool", "tool_call_id": message.tool_call_id,
                        "content": _text(message.content)})
    return out


def run_input(session: Session, messages: Sequence[Message]) -> str | list[dict[str, Any]]:
    """The run's input: the last user message; for a new session, the whole conversation."""
    return turn_input(session, chat_messages(messages),
                      " (or answer the run's interrupts with `resume`)")


async def resume(hub: Hub, session: Session, entries: Sequence[ResumeEntry]) -> Run:
    """Complete the human jobs the entries answer; the run their completion starts.

    Raises:
        ProtocolError: ``run_active``, ``unknown_job``, ``not_human``, ``job_finished``.
    """
    if session.runs:
        raise ProtocolError("run_active", "the thread has a run going; wait for its end")
    for entry in entries:
        if entry.status == "resolved":
            await hub.complete_job(session, entry.interrupt_id, entry.payload)
            continue
        row = await hub.job(entry.interrupt_id)
        if row is None or row["session_id"] != session.id:
            raise ProtocolError("unknown_job", f"no job {entry.interrupt_id!r} in this thread")
        if row["via"] != "human":
            raise ProtocolError("not_human", f"job {entry.interrupt_id} is not a person's")
        if not await hub.jobs.complete_now(entry.interrupt_id, "cancelled", error={
                "code": "cancelled", "message": "the person cancelled the request"}):
            raise ProtocolError("job_finished", f"job {entry.interrupt_id} has already ended")
    run = next(iter(session.runs.values()), None)
    if run is None:
        raise ProtocolError("job_finished", "no run was started by the answers")
    return run  # type: ignore[no-any-return]


async def answerable(hub: Hub, session: Session, token: str | None) -> bool:
    """True when ``token`` may answer the session's human jobs: its own, or an API key."""
    return (await hub.store.authorize(session.id, token) is not None
            or api_key_ok(token, hub.settings.api_keys))


async def endpoint(request: Request) -> Response:
    """``POST /ag-ui``: a ``RunAgentInput`` in, the run's AG-UI events out over SSE."""
    try:
        hub, body, session = await open_conversation(request, RunAgentInput,
                                                     "a RunAgentInput", "ag-ui", "thread_id")
        head = session.log.head_seq
        if body.resume and not await answerable(hub, session, token_of(request)):
            raise ProtocolError("unauthorized", "answering the thread's interrupts needs its "
                                "session token (or an API key)")
        run = (await resume(hub, session, body.resume) if body.resume
               else await hub.start_run(session, run_input(session, body.messages)))
    except ProtocolError as exc:
        return refusal(exc)
    encoder, sse = AgUiEncoder(body.thread_id, body.run_id), EventEncoder()

    async def stream() -> AsyncIterator[bytes]:
        async for frame in RunFrames(hub, session, run.id, head):
            for event in encoder.feed(frame):
                yield sse.encode(event).encode()

    return event_stream(hub, stream())

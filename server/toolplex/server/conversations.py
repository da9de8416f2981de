"""What the ecosystem adapters share: their conversation ids mapped to sessions, and one
run's frames out of the session's log.

AG-UI names a conversation by ``threadId`` and the AI SDK by its chat ``id``; both are
chosen by the client. An id that is the id of a session made by ``POST /v1/sessions``
is that session and needs its token; any other id gets a session of its own on first
use. When the server has API keys, that needs one of them (``Authorization: Bearer
<key>``); a session id with its own token needs none. The map is the backend's: in one
process it lives in memory (after a restart a known id starts a new session); on Redis,
any process continues the conversation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, TypeVar

import pydantic
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..decode import check_depth
from ..events import TERMINAL_RUN_TYPES
from ..exceptions import ProtocolError
from ..session import Session
from .auth import api_key_ok, token_of
from .bodies import read_body
from .hub import Hub
from .readers import SlowReader, frames
from .responses import error_response

Body = TypeVar("Body", bound=pydantic.BaseModel)

def refusal(exc: ProtocolError) -> JSONResponse:
    """The JSON error an adapter answers instead of a stream."""
    return error_response(exc.code, exc.message)


def turn_input(session: Session, chat: list[dict[str, Any]],
               hint: str = "") -> str | list[dict[str, Any]]:
    """A run's input from a client's whole conversation (OpenAI chat messages): the last
    user message, or for a new session the whole conversation.

    Raises:
        ProtocolError: ``bad_input`` when the last message is not a user message.
    """
    if not chat or chat[-1]["role"] != "user":
        raise ProtocolError("bad_input", "the last message must be a user message" + hint)
    # toolplex keeps the history per session: an existing session only needs the new turn.
    if session.history or len(chat) == 1:
        return str(chat[-1]["content"])
    return chat


async def open_conversation(request: Request, model: type[Body], what: str, kind: str,
                            conversation_id: str) -> tuple[Hub, Body, Session]:
    """Read and validate an adapter's request body; its conversation's session.

    ``conversation_id`` names the body's field that holds the conversation id.

    Raises:
        ProtocolError: ``too_large``, ``too_deep``, ``bad_input`` or ``unauthorized``.
    """
    hub: Hub = request.app.state.hub
    raw = await read_body(request, hub.settings.max_body_bytes)
    check_depth(raw)  # pydantic's decoder allows deeper nesting than the rest of the server
    try:
        body = model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise ProtocolError("bad_input", f"not {what}: {exc.errors()[0]['msg']}") from None
    session = await conversations(request).open(hub, kind, getattr(body, conversation_id),
                                          token_of(request))
    return hub, body, session


class Conversations:
    """Client-chosen conversation ids (per adapter) and the sessions they stand for."""

    async def find(self, hub: Hub, kind: str, key: str, token: str | None) -> Session | None:
        """The session for ``key``, or None when there is none.

        Raises:
            ProtocolError: ``unauthorized``: ``key`` is a session id, ``token`` not its token.
        """
        keyed = api_key_ok(token, hub.settings.api_keys)
        if await hub.store.fetch(key) is not None:
            session = await hub.store.fetch(key) if keyed else await hub.store.authorize(key, token)
            if session is None:
                raise ProtocolError("unauthorized", "missing or invalid session token")
            return session
        if hub.settings.api_keys and not keyed:
            raise ProtocolError("unauthorized", "missing or invalid API key")
        session_id = await hub.backend.conversation(kind, key)  # (opened on any process)
        return await hub.store.fetch(session_id) if session_id is not None else None

    async def open(self, hub: Hub, kind: str, key: str, token: str | None) -> Session:
        """The session for ``key``, created on first use.

        Raises:
            ProtocolError: ``unauthorized``: ``key`` is a session id, ``token`` not its token.
        """
        session = await self.find(hub, kind, key, token)
        if session is None:
            session = await hub.create_session()
            # Two processes opening one conversation at once: the first id stored wins.
            session_id = await hub.backend.conversation(kind, key, session.id)
            session = (await hub.store.fetch(session_id) if session_id else None) or session
        return session


def conversations(request: Request) -> Conversations:
    """The server's conversation map (made on first use; one per app)."""
    state = request.app.state
    if getattr(state, "conversations", None) is None:
        state.conversations = Conversations()
    found: Conversations = state.conversations
    return found


class RunFrames:
    """One run's frames from a cursor, live, ending after its terminal event.

    Session-level job events (``job.progress``, ``job.completed``) are included for the
    jobs this run started. :attr:`cursor` is the seq of the last log event read, shown
    or not, so a caller can wait on the log without consuming it.
    """

    def __init__(self, hub: Hub, session: Session, run_id: str, after: int) -> None:
        self.hub = hub
        self.session = session
        self.run_id = run_id
        self.cursor = after
        self._jobs: set[str] = set()

    async def __aiter__(self) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async for frame in frames(self.session, self.cursor, self.hub.settings):
                if frame["type"].startswith("stream."):
                    continue
                self.cursor = frame["seq"]
                if frame.get("run_id") == self.run_id:
                    if frame["type"] == "job.pending":
                        self._jobs.add(frame["job_id"])
                    yield frame
                    if frame["type"] in TERMINAL_RUN_TYPES:
                        return
                elif frame["type"].startswith("job.") and frame.get("job_id") in self._jobs:
                    yield frame
        except SlowReader:
            return  # the client sees the stream end early, as after a network failure

    def more_ready(self) -> bool:
        """True when the log holds events beyond :attr:`cursor`."""
        return self.session.log.head_seq > self.cursor


def start_seq(session: Session, run_id: str) -> int:
    """The seq just before the run's ``run.started`` (the oldest retained one if it fell out)."""
    for event in reversed(session.log.replay()):
        if event.type == "run.started" and event.run_id == run_id:
            return event.seq - 1
    return session.log.first_seq - 1

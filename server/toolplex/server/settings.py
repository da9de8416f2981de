"""Server settings, with the defaults PROTOCOL.md and the issues ask for."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def env_list(name: str) -> tuple[str, ...]:
    """A comma-separated environment variable as a tuple (empty when unset)."""
    return tuple(v.strip() for v in os.environ.get(name, "").split(",") if v.strip())


def _default_static() -> Path | None:
    # A wheel ships the client and the demo as package data (setup.py copies them);
    # an editable install (the README's) serves the checkout's client_js/ itself.
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "static", package.parents[1] / "client_js"):
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class Settings:
    """How the server behaves at its edges.

    Example::

        create_app(agent, settings=Settings(allowed_origins=("https://app.example",)))
    """

    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed besides the server's own ("*": any); the same as
    ``cors_origins`` (both lists count, see :attr:`origins`)."""
    cors_origins: tuple[str, ...] = field(default_factory=lambda: env_list(
        "TOOLPLEX_CORS_ORIGINS"))
    """Browser origins that may call the API from their pages: CORS on the REST, SSE and
    adapter routes, and the origins WebSockets accept (env TOOLPLEX_CORS_ORIGINS,
    comma-separated). Any other origin gets no CORS header, a 403 on a state-changing
    request and a refused WebSocket handshake."""
    api_keys: tuple[str, ...] = field(default_factory=lambda: env_list("TOOLPLEX_API_KEY"))
    """Keys a client must send (``Authorization: Bearer <key>``) on every route that
    starts work: creating a session and the adapters (a session's own token opens that
    session). Empty: no key needed (env TOOLPLEX_API_KEY, comma-separated)."""
    trusted_hosts: tuple[str, ...] = field(default_factory=lambda: env_list(
        "TOOLPLEX_TRUSTED_HOSTS"))
    """``Host`` names answered (``*.example.com`` patterns; ``*``: any). Empty: loopback
    names and ``public_url``'s host. Others get 400 (against DNS rebinding)."""
    max_frame_bytes: int = 1 << 20
    """A WebSocket frame larger than this closes the connection with 1009."""
    max_body_bytes: int = 1 << 20
    """An HTTP request body larger than this is refused with 413, counted as it arrives
    (a ``Content-Length`` past it is refused before the body is read)."""
    session_idle_ttl: float = 3600.0
    """Seconds after which a session with no run, no reader and no open job is forgotten
    (and deleted from the SQLite file)."""
    max_sessions: int = 10_000
    """Live sessions this process holds at most; past it, creating one (``POST
    /v1/sessions``, a new adapter thread) is refused with 503 and ``Retry-After``."""
    log_retain: int = 10_000
    """Events each session keeps for replay; older cursors get ``stream.gap``."""
    log_retain_bytes: int = 64 << 20
    """The same window's budget in bytes of JSON: the oldest events leave it first."""
    max_event_bytes: int = 1 << 20
    """No logged event's JSON is larger, and no frame a reader is sent: a tool's chunk or
    result over it ends the call with ``tool.error`` ``output_too_large``; merged deltas
    and a gap's snapshot are cut into frames under it."""
    reader_queue: int = 1_000
    """A reader this many events behind gets deltas coalesced."""
    reader_max_lag: int = 5_000
    """A reader this many events behind is disconnected (4008) and may resume."""
    send_timeout: float = 10.0
    """Seconds one frame may take to leave before the reader counts as stalled."""
    heartbeat: float = 15.0
    """Seconds between SSE heartbeat comments."""
    shutdown_grace: float = 5.0
    """Seconds runs get to finish cancelling at shutdown."""
    static_dir: Path | None = field(default_factory=_default_static)
    """The JS client and demo page, served at ``/static`` and ``/``."""
    db_path: str | None = None
    """SQLite file for sessions and jobs (WAL); None keeps the agent's own job store
    (in memory unless the agent was given one). ``toolplex serve`` uses a file."""
    webhook_secret: str | None = field(
        default_factory=lambda: os.environ.get("TOOLPLEX_WEBHOOK_SECRET"))
    """``whsec_...`` secret webhooks are signed with (env TOOLPLEX_WEBHOOK_SECRET)."""
    webhook_tolerance: float = 300.0
    """Seconds a webhook's timestamp may differ from now."""
    freeze_gc: bool = True
    """At startup, ``gc.freeze()`` what is alive (imported modules: openai, pydantic,
    starlette...), so that collections stop rescanning it."""
    gc_thresholds: tuple[int, int, int] | None = (700, 10, 1000)
    """``gc.set_threshold(...)`` at startup (None keeps CPython's (700, 10, 10)). Full
    collections rescan every session's retained events and stall all streams at once;
    these thresholds run one 100 times less often (every ~7M allocations), young
    collections unchanged (``python -m bench.sessions --gc-thresholds`` compares them;
    bench/README.md has the figures). Raising the first threshold instead also lowered
    the tail latency, but the stalled-reader test's memory then grew without levelling
    off."""
    redis_url: str | None = field(default_factory=lambda: os.environ.get("TOOLPLEX_REDIS_URL"))
    """``redis://...``: sessions, event logs and jobs live in Redis, shared by every
    process started with the same URL (env TOOLPLEX_REDIS_URL). None: one process."""
    lease_ttl: float = 10.0
    """Seconds a run's owner lease lasts unrenewed: how long the run of a process that
    died stays open before another process ends it (``owner_lost``)."""
    public_url: str = "http://127.0.0.1:8000"
    """The base URL external services reach this server at (for callback URLs)."""

    @property
    def origins(self) -> tuple[str, ...]:
        """Every browser origin allowed besides the server's own."""
        return self.allowed_origins + self.cors_origins

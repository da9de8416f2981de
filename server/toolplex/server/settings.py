"""Server settings, with the defaults PROTOCOL.md and the issues ask for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def _default_static() -> Path | None:
    # An editable install (the README's) finds the client next to the package.
    candidate = Path(__file__).resolve().parents[3] / "client_js"
    return candidate if candidate.is_dir() else None


@dataclass(frozen=True, slots=True)
class Settings:
    """How the server behaves at its edges.

    Example::

        create_app(agent, settings=Settings(allowed_origins=("https://app.example",)))
    """

    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed to open a WebSocket besides the server's own ("*": any)."""
    max_frame_bytes: int = 1 << 20
    """A WebSocket frame larger than this closes the connection with 1009."""
    session_idle_ttl: float = 3600.0
    """Seconds after which a session with no run and no reader is forgotten."""
    log_retain: int = 10_000
    """Events each session keeps for replay; older cursors get ``stream.gap``."""
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

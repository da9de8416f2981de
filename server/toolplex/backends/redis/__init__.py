"""The Redis backend: sessions, event logs and jobs in Redis, shared by several processes.

- :mod:`.keys`: the key schema and the clients;
- :mod:`.log`: each session's log as a Redis Stream, seq assigned in Redis;
- :mod:`.store`: sessions and jobs as hashes;
- :mod:`.lease`: which process executes a session's run;
- :mod:`.backend`: :class:`RedisBackend`, the :class:`~toolplex.backends.Backend` over them.

Imported only when a server is started with a Redis URL.
"""

from __future__ import annotations

from .backend import RedisBackend
from .log import SharedLog, SharedLogs
from .store import RedisStore

__all__ = ["RedisBackend", "RedisStore", "SharedLog", "SharedLogs"]

"""The task group for work that must outlive the scope that starts it.

A tool's body runs here, not in its call's task, so a body that ignores cancellation
can be abandoned without holding its call, its step or its run. Job work, job turns and
the library's runs live here too: each is a task of one long-lived group, owned by
whoever owns the agent's runs (the server's lifespan serves it; in the library, a root
task hosts it from the first task until :meth:`Supervisor.aclose`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

logger = logging.getLogger("toolplex.supervisor")


@dataclass(eq=False, slots=True)
class Supervised:
    """One task of a :class:`Supervisor`: its scope stops it."""

    closes: bool
    """:meth:`Supervisor.aclose` stops it (the library's runs are left to their readers)."""
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    finished: bool = False
    abandoned: bool = False
    ended: anyio.Event | None = None
    """Made by whoever waits for the task; set when it has finished."""

    async def wait(self) -> None:
        """Return once the task has finished."""
        if not self.finished:
            self.ended = self.ended or anyio.Event()
            await self.ended.wait()


class Supervisor:
    """Owns the tasks that must outlive the scope that starts them, in one task group.

    Args:
        grace: Real seconds a stopped task gets to finish before it is abandoned.
    """

    def __init__(self, grace: float = 0.5) -> None:
        self.grace = grace
        self.abandoned = 0
        """Tasks that ignored cancellation past the grace (still running)."""
        self._group: TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._root: asyncio.Task[None] | None = None
        self._root_scope: anyio.CancelScope | None = None
        self._waiting: list[tuple[Supervised, Callable[[], Awaitable[Any]], str]] = []
        self._running: set[Supervised] = set()

    def spawn(self, fn: Callable[[], Awaitable[Any]], *, name: str = "toolplex task",
              closes: bool = True) -> Supervised:
        """Start ``fn()`` as a task of the group (at once, or as soon as the library's root
        task has opened it)."""
        task = Supervised(closes)
        self._running.add(task)
        group = self._group
        if group is not None and self._loop is asyncio.get_running_loop():
            group.start_soon(self._supervise, task, fn, name=name)
        else:
            self._waiting.append((task, fn, name))
            self._host()
        return task

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the group until cancelled (the server's lifespan does)."""
        async with anyio.create_task_group() as group:
            self._group, self._loop = group, asyncio.get_running_loop()
            waiting, self._waiting = self._waiting, []
            for task, fn, name in waiting:
                group.start_soon(self._supervise, task, fn, name=name)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                if self._group is group:
                    self._group = None

    def _host(self) -> None:
        loop = asyncio.get_running_loop()
        if self._root is not None and not self._root.done() and self._loop is loop:
            return  # it opens the group at its first step
        self._loop = loop
        # [structured] The library has no scope that outlives its runs (Agent.run is a
        # generator, which any task may close): its group lives in one root task, as
        # trio's system tasks do, that aclose() cancels.
        self._root = loop.create_task(self._serve_root(), name="toolplex supervisor",
                                      context=contextvars.Context())

    async def _serve_root(self) -> None:
        with anyio.CancelScope() as self._root_scope:
            await self.serve()

    async def _supervise(self, task: Supervised, fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            with task.scope:
                await fn()
        except Exception:
            # A failure ends its own task, never the group and its other tasks.
            logger.exception("a background task of toolplex failed")
        finally:
            task.finished = True
            self._running.discard(task)
            if task.abandoned:
                self.abandoned -= 1
            if task.ended is not None:
                task.ended.set()

    async def stop(self, task: Supervised, label: str) -> None:
        """Cancel ``task`` and wait up to the grace; abandon it if it does not end."""
        if task.finished:
            return
        task.scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace):
            await task.wait()
        if not task.finished:
            task.abandoned = True
            self.abandoned += 1
            logger.warning("abandoned %s: it ignored cancellation for %.2f s", label, self.grace)

    async def aclose(self) -> None:
        """Cancel every task still running (the library's runs aside) and wait briefly
        for them; then end the library's root task if nothing else runs in it."""
        tasks = [task for task in self._running if task.closes]
        for task in tasks:
            task.scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace):
            for task in tasks:
                await task.wait()
        if self._root_scope is not None and all(t.closes for t in self._running):
            self._root_scope.cancel()
            self._root_scope = self._root = None
            self._group = None

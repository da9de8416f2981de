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
from dataclasses import dataclass
from typing import Any

import anyio
from anyio import TaskHandle
from anyio.abc import TaskGroup

logger = logging.getLogger("toolplex.supervisor")


@dataclass(eq=False, slots=True)
class Supervised:
    """One task of a :class:`Supervisor`: :meth:`cancel` stops it."""

    closes: bool
    """:meth:`Supervisor.aclose` stops it (the library's runs are left to their readers)."""
    handle: TaskHandle[None] | None = None
    """anyio's handle, once the group has started the task."""
    cancelled: bool = False
    finished: bool = False
    abandoned: bool = False
    ended: anyio.Event | None = None
    """Made by whoever waits for a task not started yet; set when it has finished."""

    def cancel(self) -> None:
        """Cancel the task (one not started yet never runs)."""
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()

    async def wait(self) -> None:
        """Return once the task has finished."""
        if self.finished:
            return
        if self.handle is not None:
            await self.handle.wait()
            return
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
        self._waiting: list[tuple[Supervised, Callable[[], Awaitable[Any]], str,
                                  contextvars.Context | None]] = []
        self._running: set[Supervised] = set()

    def spawn(self, fn: Callable[[], Awaitable[Any]], *, name: str = "toolplex task",
              closes: bool = True, context: contextvars.Context | None = None) -> Supervised:
        """Start ``fn()`` as a task of the group (at once, or as soon as the library's root
        task has opened it), in ``context`` (default: a copy of the current one)."""
        task = Supervised(closes)
        self._running.add(task)
        group = self._group
        if group is not None and self._loop is asyncio.get_running_loop():
            task.handle = group.create_task(self._supervise(task, fn), name=name,
                                            context=context)
        else:
            self._waiting.append((task, fn, name, context or contextvars.copy_context()))
            self._host()
        return task

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the group until cancelled (the server's lifespan does)."""
        async with anyio.create_task_group() as group:
            self._group, self._loop = group, asyncio.get_running_loop()
            waiting, self._waiting = self._waiting, []
            for task, fn, name, context in waiting:
                task.handle = group.create_task(self._supervise(task, fn), name=name,
                                                context=context)
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
            if not task.cancelled:
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
        task.cancel()
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
            task.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace):
            for task in tasks:
                await task.wait()
        if self._root_scope is not None and all(t.closes for t in self._running):
            self._root_scope.cancel()
            self._root_scope = self._root = None
            self._group = None

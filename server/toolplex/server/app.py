"""``create_app``: the Starlette app over an agent."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import anyio
import sniffio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..runner import Agent
from ..scripted import ScriptedModel
from . import ag_ui, ai_sdk, guard, routes
from .auth import install_redaction
from .hub import Hub
from .metrics import HTTPMetrics
from .openapi import openapi
from .settings import Settings
from .signals import drain_on_signals
from .transports import StuckTransports, transport_of
from .ws import websocket_endpoint

_NO_DEMO = """<!doctype html><title>toolplex</title><h1>toolplex</h1>
<p>The demo page lives in the repository's <code>client_js/</code>; run the server from a
checkout (<code>pip install -e .</code>) to serve it.</p>"""


class _DeclareAsyncio:
    """Tell sniffio, once per connection (and for the lifespan, where runs live), that
    this is asyncio.

    Every anyio primitive asks sniffio which library runs it; without the declaration
    sniffio asks ``asyncio.current_task()``, and on Python 3.11 that calls
    ``get_running_loop()``, which makes a ``getpid()`` system call each time (to notice
    a fork; 3.12 dropped it). Declared, anyio's primitives skip that system call; the
    log, the readers and the calls make several per event (the figures are in
    bench/README.md). The context variable is sniffio's documented way for
    a library to declare itself; tasks started from here inherit it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if sniffio.current_async_library() == "asyncio":
            sniffio.current_async_library_cvar.set("asyncio")
        await self.app(scope, receive, send)


class _App(Starlette):
    """Starlette, aborting a connection whose peer stopped reading once its call ends."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = transport_of(send) if scope["type"] != "lifespan" else None
        try:
            await super().__call__(scope, receive, send)
        finally:
            if transport is not None:
                self.state.stuck.watch(transport)


def create_app(agent: Agent | None = None, *, settings: Settings | None = None,
               webhook_secret: str | None = None) -> Starlette:
    """The Starlette app speaking PROTOCOL.md over ``agent``.

    Args:
        agent: Default: the demo agent (scripted model, example tools).
        settings: Edge behaviour (origins, limits, slow readers); see :class:`Settings`.
        webhook_secret: ``whsec_...``; overrides ``settings.webhook_secret``.

    Example::

        app = create_app(Agent(tools=[lookup]))
        uvicorn.run(app, ws_max_size=1 << 20, ws_per_message_deflate=False)
    """
    if agent is None:
        from ..demo import demo_agent

        agent = demo_agent()
    settings = settings or Settings()
    if webhook_secret is not None:
        settings = replace(settings, webhook_secret=webhook_secret)
    hub = Hub(agent, settings)
    stuck = StuckTransports(settings.send_timeout)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        install_redaction()
        if settings.freeze_gc:
            gc.collect()
            gc.freeze()
        if settings.gc_thresholds is not None:
            gc.set_threshold(*settings.gc_thresholds)
        async with anyio.create_task_group() as tg:
            await tg.start(hub.serve)
            await tg.start(stuck.serve)
            tg.start_soon(drain_on_signals, hub.drain)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def index(request: Request) -> Response:
        page = settings.static_dir / "demo" / "index.html" if settings.static_dir else None
        if page is not None and page.is_file():
            return FileResponse(page)
        return HTMLResponse(_NO_DEMO)

    route_list = [
        Route("/", index),
        Route("/healthz", routes.healthz),
        Route("/v1/agent", routes.agent_info),
        Route("/metrics", routes.metrics),
        Route("/openapi.json", openapi),
        Route("/v1/sessions", routes.create_session, methods=["POST"]),
        WebSocketRoute("/v1/sessions/{session_id}/ws", websocket_endpoint),
        Route("/v1/sessions/{session_id}/events", routes.events),
        Route("/v1/sessions/{session_id}/runs", routes.start_run, methods=["POST"]),
        Route("/v1/sessions/{session_id}/runs/{run_id}/cancel", routes.cancel_run,
              methods=["POST"]),
        Route("/v1/sessions/{session_id}/calls/{call_id}/cancel", routes.cancel_call,
              methods=["POST"]),
        Route("/v1/jobs/{job_id}", routes.job_status),
        Route("/v1/jobs/{job_id}/complete", routes.complete_job, methods=["POST"]),
        Route("/v1/webhooks/{job_id}", routes.webhook, methods=["POST"]),
        # Ecosystem adapters: encoders over the same log (see ag_ui.py, ai_sdk.py).
        Route("/ag-ui", ag_ui.endpoint, methods=["POST"]),
        Route("/v1/ai-sdk/chat", ai_sdk.chat, methods=["POST"]),
        Route("/v1/ai-sdk/chat/{chat_id}/stream", ai_sdk.resume_stream),
    ]
    if settings.static_dir is not None:
        route_list.append(Mount("/static", StaticFiles(directory=settings.static_dir)))
    if isinstance(agent.model, ScriptedModel):
        # The embedded model on a port, for other programs: any OpenAI client pointed
        # at {base}/scripted/v1 gets the same chunk stream the agent does.
        route_list.append(Mount("/scripted", agent.model.asgi_app(settings.max_body_bytes)))
    app = _App(routes=route_list, lifespan=lifespan,
                    middleware=[Middleware(HTTPMetrics, metrics=hub.metrics),
                                Middleware(_DeclareAsyncio), *guard.middleware(settings)],
                    exception_handlers=dict.fromkeys(hub.backend.unreachable,
                                                     routes.store_unreachable))
    app.state.hub = hub
    app.state.stuck = stuck
    return app

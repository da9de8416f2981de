"""The ``toolplex`` command: ``serve`` the app, or run an example ``demo`` in the terminal."""

from __future__ import annotations

import argparse
import os
import sys

_EXAMPLES = ("enrichment", "search_race")

_SERVE_HELP = """\
Serve the toolplex app (WebSocket, SSE, REST, demo page at /).

With no options it runs the scripted model with the example tools: no key, no
network. Point it at a real model with --model and --base-url (or the
environment variables OPENAI_API_KEY and OPENAI_BASE_URL): OpenAI, vLLM,
Ollama or any OpenAI-compatible endpoint. Webhooks for long-running jobs are
verified with TOOLPLEX_WEBHOOK_SECRET (Standard Webhooks, whsec_...).
With --redis, any number of processes share sessions, logs, jobs and webhooks:
put them behind one load balancer (no sticky sessions needed).

examples:
  toolplex serve
  toolplex serve --port 9000 --allow-origin https://app.example.com
  OPENAI_API_KEY=sk-... toolplex serve --model gpt-4o-mini
  toolplex serve --model llama3.1 --base-url http://127.0.0.1:11434/v1
  toolplex serve --port 8001 --redis redis://127.0.0.1:6379/0
"""


def _serve(options: argparse.Namespace) -> int:
    import uvicorn

    from .demo import demo_agent
    from .model import OpenAIModel
    from .server import Settings, create_app

    model = None
    if options.model != "scripted":
        model = OpenAIModel(options.model, base_url=options.base_url, api_key=options.api_key)
    settings = Settings(allowed_origins=tuple(options.allow_origin),
                        max_frame_bytes=options.max_frame_bytes, db_path=options.db,
                        redis_url=options.redis or None,
                        public_url=options.public_url
                        or f"http://{options.host}:{options.port}")
    from .server.logs import configure

    app = create_app(demo_agent(model), settings=settings)
    configure(options.log_level)
    uvicorn.run(
        app, host=options.host, port=options.port, log_config=None,
        ws_max_size=options.max_frame_bytes, ws_per_message_deflate=False,
        ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=10,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``toolplex`` console script."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="toolplex", description="A streaming-first agent server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the app", description=_SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default=env("TOOLPLEX_HOST", "127.0.0.1"),
                       help="interface to bind (env TOOLPLEX_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(env("TOOLPLEX_PORT", "8000")),
                       help="port (env TOOLPLEX_PORT; default 8000)")
    serve.add_argument("--model", default=env("TOOLPLEX_MODEL", "scripted"),
                       help="model name, or 'scripted' for the embedded default "
                            "(env TOOLPLEX_MODEL)")
    serve.add_argument("--base-url", default=env("OPENAI_BASE_URL"),
                       help="OpenAI-compatible endpoint (env OPENAI_BASE_URL)")
    serve.add_argument("--api-key", default=env("OPENAI_API_KEY"),
                       help="API key (env OPENAI_API_KEY; never logged)")
    serve.add_argument("--allow-origin", action="append", default=[],
                       help="browser origin allowed to open WebSockets (repeatable; '*' any)")
    serve.add_argument("--max-frame-bytes", type=int, default=1 << 20,
                       help="largest WebSocket frame accepted (default 1 MiB; larger: 1009)")
    serve.add_argument("--db", default=env("TOOLPLEX_DB", "toolplex.sqlite"),
                       help="SQLite file (WAL) where sessions and jobs survive restarts "
                            "(env TOOLPLEX_DB; ':memory:' for none)")
    serve.add_argument("--redis", default=env("TOOLPLEX_REDIS_URL"), metavar="URL",
                       help="redis://host:port/db: keep sessions, event logs and jobs in Redis "
                            "so several toolplex processes serve the same sessions "
                            "(env TOOLPLEX_REDIS_URL; replaces --db)")
    serve.add_argument("--public-url", default=env("TOOLPLEX_PUBLIC_URL"),
                       help="base URL partners reach this server at, for webhook callbacks "
                            "(env TOOLPLEX_PUBLIC_URL; default http://HOST:PORT)")
    serve.add_argument("--log-level", default=env("TOOLPLEX_LOG_LEVEL", "info"),
                       choices=["critical", "error", "warning", "info", "debug"])
    demo = commands.add_parser(
        "demo", help="run an example agent on the scripted model and print its events",
        description="Run an example agent in the terminal (no key, no network).")
    demo.add_argument("example", choices=_EXAMPLES, nargs="?", default="enrichment")
    demo.add_argument("args", nargs="*", help="the example's input (a domain, a query)")
    options = parser.parse_args(argv)
    if options.command == "serve":
        return _serve(options)
    if options.example == "enrichment":
        from .demo.enrichment import main as run
    else:
        from .demo.search_race import main as run
    run(options.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

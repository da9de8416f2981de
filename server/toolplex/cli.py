"""The ``toolplex`` command: ``serve`` the app, or run an example ``demo`` in the terminal."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .model import Model
    from .server import Settings

_EXAMPLES = ("enrichment", "search_race")
_LEVELS = ("critical", "error", "warning", "info", "debug")
_APIS = ("chat", "responses")

_SERVE_HELP = """\
Serve the toolplex app (WebSocket, SSE, REST, demo page at /).

With no options it runs the scripted model with the example tools: no key, no
network. Point it at a real model with --model and --base-url (or the
environment variables OPENAI_API_KEY and OPENAI_BASE_URL): OpenAI, vLLM,
Ollama or any OpenAI-compatible endpoint. Webhooks for long-running jobs are
verified with TOOLPLEX_WEBHOOK_SECRET (Standard Webhooks, whsec_...).
With --redis, any number of processes share sessions, logs, jobs and webhooks:
put them behind one load balancer (no sticky sessions needed).

On loopback (the default) no key is needed. Every route that starts work can
require an API key (--api-key, TOOLPLEX_API_KEY): clients send it as
"Authorization: Bearer KEY" to create sessions and to call the adapters; a
session's own token opens that session. A --host other than loopback refuses
to start without a key unless --insecure-no-auth is given. Browser apps on
other origins are listed with --cors-origin (TOOLPLEX_CORS_ORIGINS): CORS for
REST, SSE and the adapters, and the origins WebSockets accept. Requests whose
Host is not loopback, the public URL's host or a --trusted-host get 400.

examples:
  toolplex serve
  toolplex serve --port 9000 --cors-origin https://app.example.com
  toolplex serve --host 0.0.0.0 --api-key "$(openssl rand -hex 24)" \
      --public-url https://agents.example.com --cors-origin https://app.example.com
  OPENAI_API_KEY=sk-... toolplex serve --model gpt-4o-mini
  toolplex serve --model llama3.1 --base-url http://127.0.0.1:11434/v1
  OPENAI_API_KEY=sk-... toolplex serve --model gpt-5-mini --api responses
  toolplex serve --port 8001 --redis redis://127.0.0.1:6379/0
"""

# Every variable toolplex reads; an option given on the command line wins over it.
_ENVIRONMENT = """\
environment (an option on the command line wins; an empty value counts as unset):
  TOOLPLEX_HOST            --host
  TOOLPLEX_PORT            --port (0-65535)
  TOOLPLEX_MODEL           --model
  TOOLPLEX_API             --api (chat, responses)
  TOOLPLEX_MODEL_TIMEOUT   --model-timeout (seconds)
  TOOLPLEX_DB              --db
  TOOLPLEX_REDIS_URL       --redis
  TOOLPLEX_PUBLIC_URL      --public-url
  TOOLPLEX_LOG_LEVEL       --log-level (critical, error, warning, info, debug)
  TOOLPLEX_WEBHOOK_SECRET  whsec_... secret webhooks are signed with; when unset, the
                           embedded default generates one at startup and logs that
  TOOLPLEX_DEMO_BATCH_SECONDS
                           how long the demo's batch analysis runs (seconds, default 8)
  TOOLPLEX_API_KEY         --api-key (comma-separated for several)
  TOOLPLEX_CORS_ORIGINS    --cors-origin (comma-separated)
  TOOLPLEX_TRUSTED_HOSTS   --trusted-host (comma-separated)
  TOOLPLEX_MAX_BODY_BYTES  --max-body-bytes
  TOOLPLEX_MAX_SESSIONS    --max-sessions
  OPENAI_API_KEY           --model-api-key
  OPENAI_BASE_URL          --base-url
"""


class _EnvError(ValueError):
    """An environment variable whose value the command cannot use."""


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def _seconds(text: str) -> float:
    """An argparse type: a duration in seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return seconds


def _from_env(options: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> None:
    """Fill the options not given on the command line from the environment.

    Raises:
        _EnvError: A variable's value is not valid, said in one line.
    """
    def _env(name: str, default: str | None = None) -> str | None:
        return environ.get(name) or default

    raw_port = _env("TOOLPLEX_PORT", "8000")
    if options.port is None:
        try:
            options.port = _port(raw_port or "")
        except argparse.ArgumentTypeError as exc:
            raise _EnvError(f"TOOLPLEX_PORT: {exc}") from None
    if options.log_level is None:
        level = (_env("TOOLPLEX_LOG_LEVEL", "info") or "").lower()
        if level not in _LEVELS:
            raise _EnvError(f"TOOLPLEX_LOG_LEVEL: {environ['TOOLPLEX_LOG_LEVEL']!r} is not "
                            f"one of {', '.join(_LEVELS)}")
        options.log_level = level
    if options.api is None:
        options.api = (_env("TOOLPLEX_API", "chat") or "").lower()
        if options.api not in _APIS:
            raise _EnvError(f"TOOLPLEX_API: {environ['TOOLPLEX_API']!r} is not one of "
                            f"{', '.join(_APIS)}")
    if options.model_timeout is None:
        try:
            options.model_timeout = _seconds(_env("TOOLPLEX_MODEL_TIMEOUT", "60") or "")
        except argparse.ArgumentTypeError as exc:
            raise _EnvError(f"TOOLPLEX_MODEL_TIMEOUT: {exc}") from None
    for option, name, default in (
        ("host", "TOOLPLEX_HOST", "127.0.0.1"), ("model", "TOOLPLEX_MODEL", "scripted"),
        ("db", "TOOLPLEX_DB", "toolplex.sqlite"), ("redis", "TOOLPLEX_REDIS_URL", None),
        ("public_url", "TOOLPLEX_PUBLIC_URL", None), ("base_url", "OPENAI_BASE_URL", None),
        ("model_api_key", "OPENAI_API_KEY", None),
    ):
        if getattr(options, option) is None:
            setattr(options, option, _env(name, default))
    for option, name, fallback in (("max_body_bytes", "TOOLPLEX_MAX_BODY_BYTES", 1 << 20),
                                   ("max_sessions", "TOOLPLEX_MAX_SESSIONS", 10_000)):
        if getattr(options, option) is None:
            raw = _env(name, str(fallback)) or ""
            if not raw.isdigit() or int(raw) < 1:
                raise _EnvError(f"{name}: {raw!r} is not a positive whole number")
            setattr(options, option, int(raw))
    for option, name in (("api_key", "TOOLPLEX_API_KEY"), ("cors_origin", "TOOLPLEX_CORS_ORIGINS"),
                         ("trusted_host", "TOOLPLEX_TRUSTED_HOSTS")):
        if not getattr(options, option):  # repeated flags, else the comma-separated variable
            setattr(options, option, [v.strip() for v in (_env(name) or "").split(",")
                                      if v.strip()])


def _settings(options: argparse.Namespace) -> Settings:
    from .server import Settings

    return Settings(allowed_origins=tuple(options.allow_origin),
                    cors_origins=tuple(options.cors_origin), api_keys=tuple(options.api_key),
                    trusted_hosts=tuple(options.trusted_host),
                    max_frame_bytes=options.max_frame_bytes,
                    max_body_bytes=options.max_body_bytes, max_sessions=options.max_sessions,
                    db_path=options.db, redis_url=options.redis or None,
                    public_url=options.public_url or f"http://{options.host}:{options.port}")


def settings_from(argv: list[str], env: Mapping[str, str] | None = None) -> Settings:
    """The server settings ``toolplex serve ARGV`` would run with (``env``: the environment
    to read instead of the process's)."""
    options = _parser().parse_args(["serve", *argv])
    _from_env(options, os.environ if env is None else env)
    return _settings(options)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _model(options: argparse.Namespace) -> Model | None:
    """The model ``serve`` runs: None for the scripted default."""
    from .providers import OpenAIModel, OpenAIResponsesModel

    if options.model == "scripted":
        return None
    kind = OpenAIResponsesModel if options.api == "responses" else OpenAIModel
    return kind(options.model, base_url=options.base_url, api_key=options.model_api_key,
                idle_timeout=options.model_timeout or None)


def _serve(options: argparse.Namespace) -> int:
    import uvicorn

    from .demo import demo_agent
    from .server import configure_logging, create_app

    settings = _settings(options)
    if not _loopback(options.host) and not settings.api_keys and not options.insecure_no_auth:
        sys.stderr.write(
            f"toolplex serve: refusing to listen on {options.host} without auth: anyone who "
            "reaches it could run the agent and its tools. Set --api-key KEY (or "
            "TOOLPLEX_API_KEY=KEY1,KEY2), or pass --insecure-no-auth to serve anyway.\n")
        return 2
    model = _model(options)

    configure_logging(options.log_level)
    log = logging.getLogger("toolplex")
    if model is None and not settings.webhook_secret:
        from .server.webhooks import generate_secret

        # The embedded default's export tool starts a partner process that signs its
        # callback: it inherits the secret through the environment.
        os.environ["TOOLPLEX_WEBHOOK_SECRET"] = generate_secret()
        settings = replace(settings, webhook_secret=os.environ["TOOLPLEX_WEBHOOK_SECRET"])
        log.info("TOOLPLEX_WEBHOOK_SECRET is unset: generated a webhook secret for this "
                 "process (the demo's partner inherits it; set one to verify your own)")
    if model is not None and not options.model_api_key:
        log.warning(
            "model %r has no API key (--model-api-key or OPENAI_API_KEY): its requests go without "
            "an Authorization header, which only a local server (Ollama, vLLM) accepts",
            options.model)
    app = create_app(demo_agent(model), settings=settings)
    uvicorn.run(
        app, host=options.host, port=options.port, log_config=None,
        ws_max_size=options.max_frame_bytes, ws_per_message_deflate=False,
        ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=10,
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolplex", description="A streaming-first agent server.", epilog=_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"toolplex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the app", description=_SERVE_HELP, epilog=_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults are None here and read from the environment after parsing, so that a bad
    # value is one clear line (and --help still works with it set).
    serve.add_argument("--host", help="interface to bind (env TOOLPLEX_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (env TOOLPLEX_PORT; default 8000)")
    serve.add_argument("--model",
                       help="model name, or 'scripted' for the embedded default "
                            "(env TOOLPLEX_MODEL; default scripted)")
    serve.add_argument("--base-url", help="OpenAI-compatible endpoint (env OPENAI_BASE_URL)")
    serve.add_argument("--model-api-key",
                       help="the model's API key (env OPENAI_API_KEY; never logged)")
    serve.add_argument("--api", choices=_APIS,
                       help="the model's wire format: chat (/v1/chat/completions, every "
                            "OpenAI-compatible server) or responses (/v1/responses) "
                            "(env TOOLPLEX_API; default chat)")
    serve.add_argument("--model-timeout", type=_seconds, metavar="SECONDS",
                       help="seconds without a chunk from the model before the run ends "
                            "model_timeout; 0 waits as long as the SDK does "
                            "(env TOOLPLEX_MODEL_TIMEOUT; default 60)")
    serve.add_argument("--api-key", action="append", default=[], metavar="KEY",
                       help="an API key clients must send (Authorization: Bearer KEY) to "
                            "create sessions and call the adapters (repeatable; env "
                            "TOOLPLEX_API_KEY, comma-separated; default: none, loopback only)")
    serve.add_argument("--insecure-no-auth", action="store_true",
                       help="serve a --host other than loopback without any API key")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="browser origin allowed to call the API (CORS) and open WebSockets "
                            "(repeatable; env TOOLPLEX_CORS_ORIGINS, comma-separated; '*' any)")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="the same as --cors-origin (its older name)")
    serve.add_argument("--trusted-host", action="append", default=[], metavar="NAME",
                       help="Host header accepted (repeatable; env TOOLPLEX_TRUSTED_HOSTS, "
                            "comma-separated; default: loopback names and the public URL's "
                            "host; others get 400, against DNS rebinding)")
    serve.add_argument("--max-frame-bytes", type=int, default=1 << 20,
                       help="largest WebSocket frame accepted (default 1 MiB; larger: 1009)")
    serve.add_argument("--max-body-bytes", type=int,
                       help="largest HTTP request body accepted, counted as it arrives "
                            "(env TOOLPLEX_MAX_BODY_BYTES; default 1 MiB; larger: 413)")
    serve.add_argument("--max-sessions", type=int,
                       help="live sessions held at most (env TOOLPLEX_MAX_SESSIONS; default "
                            "10000; past it: 503 with Retry-After; idle ones expire after an "
                            "hour and are deleted from the database)")
    serve.add_argument("--db",
                       help="SQLite file (WAL) where sessions and jobs survive restarts "
                            "(env TOOLPLEX_DB; default toolplex.sqlite; ':memory:' for none)")
    serve.add_argument("--redis", metavar="URL",
                       help="redis://host:port/db: keep sessions, event logs and jobs in Redis "
                            "so several toolplex processes serve the same sessions "
                            "(env TOOLPLEX_REDIS_URL; replaces --db)")
    serve.add_argument("--public-url",
                       help="base URL partners reach this server at, for webhook callbacks "
                            "(env TOOLPLEX_PUBLIC_URL; default http://HOST:PORT)")
    serve.add_argument("--log-level", choices=_LEVELS,
                       help="(env TOOLPLEX_LOG_LEVEL; default info)")
    demo = commands.add_parser(
        "demo", help="run an example agent on the scripted model and print its events",
        description="Run an example agent in the terminal (no key, no network).")
    demo.add_argument("example", choices=_EXAMPLES, nargs="?", default="enrichment")
    demo.add_argument("args", nargs="*", help="the example's input (a domain, a query)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``toolplex`` console script."""
    options = _parser().parse_args(argv)
    if options.command == "serve":
        try:
            _from_env(options)
        except _EnvError as exc:
            sys.stderr.write(f"toolplex: error: {exc}\n")
            return 2
        return _serve(options)
    if options.example == "enrichment":
        from .demo.enrichment import main as run
    else:
        from .demo.search_race import main as run
    run(options.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

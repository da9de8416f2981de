"""``@tool``: a function becomes a tool with a JSON schema and a declared policy.

The schema comes from the signature, type hints and Google-style docstring; the
policy (timeout, retries, breaker, upstream, short-circuit rule, async mode) is
declared here and applied by one wrapper in :mod:`toolplex.calls`, so the
tool's own code stays free of it.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, overload

import pydantic

from .exceptions import InvalidArguments, UsageError

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
DEFAULT_BREAKER = 3

Mode = Literal["inline", "job", "webhook", "human", "auto"]


class Kind(Enum):
    """How a tool's function produces its output."""

    SYNC = "sync"
    """A plain function: runs in a worker thread, one chunk."""
    ASYNC = "async"
    """A coroutine function: one chunk."""
    STREAM = "stream"
    """An async generator: each yield is a chunk."""


def _default_reduce(chunks: list[Any]) -> Any:
    if chunks and all(isinstance(c, str) for c in chunks):
        return "".join(chunks)
    return list(chunks)


@dataclass(frozen=True, eq=False)
class Tool:
    """A function the model can call, with its schema and policy. Made by :func:`tool`."""

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: dict[str, Any]
    """The JSON schema of the arguments object."""
    kind: Kind
    timeout: float = DEFAULT_TIMEOUT
    """Seconds an attempt may take (capped by the agent); a worker job's work (modes
    ``job`` and ``auto``) is bounded by it uncapped, by default (``inf``) by the job's TTL."""
    retries: int = DEFAULT_RETRIES
    breaker: int = DEFAULT_BREAKER
    """Consecutive failed calls that disable the tool for the session (0: never)."""
    upstream: str | None = None
    side_effects: bool = False
    decisive: Callable[[Any], bool] | None = None
    stop_when: Callable[[Any], bool] | None = None
    """A chunk for which it is true ends the call's stream there: a partial result."""
    head_start: float | None = None
    """Seconds the step's non-decisive calls wait after this decisive call starts."""
    mode: Mode = "inline"
    budget: float | None = None
    cache: float | None = None
    """Seconds an identical call's result is memoised in the session."""
    reduce: Callable[[list[Any]], Any] = _default_reduce
    rerun_on_restart: bool = False
    wants_job: bool = False
    idle_timeout: bool = False
    """The timeout counts from the last chunk, not from the start: a call that keeps
    reporting progress lives on, a silent one times out."""
    _model: type[pydantic.BaseModel] | None = field(default=None, repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (no policy)."""
        return self.fn(*args, **kwargs)

    def spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def validate(self, raw: str | dict[str, Any]) -> dict[str, Any]:
        """Parse and validate the model's arguments into keyword arguments.

        Raises:
            InvalidArguments: Not JSON, not an object, or not matching the schema.
        """
        data = parse_arguments(self.name, raw)
        assert self._model is not None
        try:
            parsed = self._model.model_validate(data)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidArguments(self.name, problems) from None
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}


def parse_arguments(name: str, raw: str | dict[str, Any]) -> dict[str, Any]:
    """The model's arguments text (or object) as an object.

    Raises:
        InvalidArguments: Not JSON, or not an object.
    """
    if isinstance(raw, str):
        try:
            data = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidArguments(name, f"not valid JSON ({exc.msg})") from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise InvalidArguments(name, "arguments must be a JSON object")
    return data


_ARGS_RE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and ``Args:`` entries."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section = "summary"
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        if stripped in {"Args:", "Arguments:", "Parameters:"}:
            section, current = "args", None
            continue
        if re.fullmatch(r"(Returns|Raises|Yields|Example|Examples|Note|Notes):", stripped):
            section = "other"
            continue
        if section == "summary":
            summary.append(line)
        elif section == "args":
            match = _ARGS_RE.match(line)
            if match and not line.startswith("        "):
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and stripped:
                args[current] = f"{args[current]} {stripped}".strip()
    return "\n".join(summary).strip(), args


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def _build(fn: Callable[..., Any], options: dict[str, Any]) -> Tool:
    if not callable(fn):
        raise UsageError(f"@tool expects a function, got {fn!r}")
    if inspect.isasyncgenfunction(fn):
        kind = Kind.STREAM
    elif inspect.iscoroutinefunction(fn):
        kind = Kind.ASYNC
    else:
        kind = Kind.SYNC
    name = options.pop("name", None) or fn.__name__
    description, arg_docs = _parse_docstring(fn.__doc__)
    description = options.pop("description", None) or description or name
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError as exc:
        raise UsageError(f"tool {name}: cannot resolve a type hint ({exc})") from None
    fields: dict[str, Any] = {}
    wants_job = False
    for param in inspect.signature(fn).parameters.values():
        if param.name == "job":
            wants_job = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UsageError(f"tool {name}: *args/**kwargs cannot be described to a model")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (
            annotation,
            pydantic.Field(default, description=arg_docs.get(param.name)),
        )
    model = pydantic.create_model(f"{name}_args", **fields)
    parameters = _strip_titles(model.model_json_schema())
    parameters.setdefault("properties", {})
    mode = options.get("mode", "inline")
    if mode not in typing.get_args(Mode):
        raise UsageError(f"tool {name}: mode must be one of {typing.get_args(Mode)}")
    if mode in {"webhook", "human"} and not wants_job:
        raise UsageError(f"tool {name}: mode={mode!r} needs a `job` parameter")
    if mode == "auto" and not options.get("budget"):
        raise UsageError(f"tool {name}: mode='auto' needs budget=<seconds>")
    if options.get("timeout") is not None and options["timeout"] <= 0:
        raise UsageError(f"tool {name}: timeout must be positive")
    head_start = options.get("head_start")
    if head_start is not None and (head_start <= 0 or options.get("decisive") is None):
        raise UsageError(f"tool {name}: head_start needs decisive=... and a positive number "
                         "of seconds")
    if mode in {"job", "auto"} and "timeout" not in options:
        options["timeout"] = math.inf  # a worker's job is bounded by its TTL (see jobs.py)
    if options.get("reduce") is None:
        options.pop("reduce", None)
    return Tool(
        fn=fn,
        name=name,
        description=description,
        parameters=parameters,
        kind=kind,
        wants_job=wants_job,
        _model=model,
        **options,
    )


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    breaker: int = DEFAULT_BREAKER,
    upstream: str | None = None,
    side_effects: bool = False,
    decisive: Callable[[Any], bool] | None = None,
    stop_when: Callable[[Any], bool] | None = None,
    head_start: float | None = None,
    mode: Mode = "inline",
    budget: float | None = None,
    cache: float | None = None,
    reduce: Callable[[list[Any]], Any] | None = None,
    rerun_on_restart: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a tool: ``@tool`` or ``@tool(timeout=30, upstream="apollo")``.

    Args:
        name: The name the model sees (default: the function's name).
        description: Default: the docstring's summary.
        timeout: Hard timeout per attempt in seconds (default 10, capped by the agent).
            For ``mode="job"`` and ``"auto"`` it bounds the job's work, uncapped
            (default: the job's time-to-live).
        retries: Retries for transient failures (default 3; backoff 1, 2, 4 s).
        breaker: Consecutive failed calls that disable the tool for the session.
        upstream: Name of the upstream whose rate/concurrency limit the call shares.
        side_effects: A write: never started before the model's response ends cleanly.
        decisive: ``predicate(chunk)``: a chunk (or result) for which it is true
            cancels the sibling calls of the step.
        stop_when: ``predicate(chunk)``: a chunk for which it is true stops this call's
            stream at once; the call ends with the chunks so far (``tool.result``
            ``partial: true``, ``stopped_by: "predicate"``). Siblings are untouched.
        head_start: With ``decisive``: the step's non-decisive calls wait up to this many
            seconds after this call starts; a decisive chunk in that time cancels them
            before they start (``tool.cancelled`` ``short_circuit``).
        mode: ``inline`` (default), ``job``, ``webhook``, ``human`` or ``auto``.
        budget: For ``mode="auto"``: seconds inline before the call becomes a job.
        cache: Seconds an identical call's result is reused within the session.
        reduce: ``reduce(chunks)``: a streaming tool's result for the model.
        rerun_on_restart: A worker job interrupted by a restart is run again
            (default: it is marked failed).

    Example::

        @tool(timeout=30, upstream="apollo")
        async def apollo(domain: str) -> dict:
            \"\"\"Look a company up in Apollo.

            Args:
                domain: The company's web domain.
            \"\"\"
    """
    if fn is not None:
        return _build(fn, options)
    return lambda f: _build(f, dict(options))

from __future__ import annotations

import json

import pytest

from toolplex.events import (
    EVENT_TYPES,
    RunStarted,
    ToolCancelled,
    ToolOutputDelta,
    ToolResult,
    from_dict,
)


def test_envelope_has_protocol_fields_in_order() -> None:
    event = ToolOutputDelta(seq=3, ts=1764000000123, session_id="s_1", run_id="r_1",
                            call_id="c_1", attempt=1, index=0, data={"x": 1})
    wire = event.to_dict()
    assert list(wire)[:7] == ["v", "seq", "type", "ts", "session_id", "run_id", "call_id"]
    assert wire["v"] == 1
    assert wire["type"] == "tool.output.delta"
    assert wire["data"] == {"x": 1}


def test_optional_fields_are_omitted_not_null() -> None:
    wire = ToolCancelled(seq=1, ts=1, session_id="s", run_id="r", call_id="c",
                         reason="user").to_dict()
    assert "by_call_id" not in wire, "optional fields are omitted, never null"
    assert "partial_output" not in wire
    assert None not in wire.values()


def test_result_marks_partial_and_omits_cached_unless_true() -> None:
    wire = ToolResult(call_id="c", output=[1], partial=True).to_dict()
    assert wire["partial"] is True
    assert "cached" not in wire


def test_json_is_compact_utf8() -> None:
    text = RunStarted(seq=1, ts=1, session_id="s", run_id="r", trigger="user",
                      input="café").to_json()
    assert " " not in text.replace("café", "")
    assert "café" in text, "UTF-8, not \\u escapes"


def test_from_dict_round_trips_every_field() -> None:
    event = ToolCancelled(seq=9, ts=5, session_id="s", run_id="r", call_id="c",
                          reason="short_circuit", by_call_id="c2", partial_output=["a"])
    assert from_dict(json.loads(event.to_json())) == event


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_protocol_type_has_a_class_with_docstring(kind: str) -> None:
    cls = EVENT_TYPES[kind]
    assert cls.__doc__, f"{cls.__name__} needs a docstring"


def test_protocol_vocabulary_is_complete() -> None:
    required = {
        "run.started", "step.started", "step.finished", "text.start", "text.delta", "text.end",
        "tool.call.start", "tool.call.delta", "tool.call.end", "tool.exec.started",
        "tool.output.delta", "tool.retrying", "tool.timeout", "tool.result", "tool.error",
        "tool.cancelled", "tool.short_circuit", "tool.circuit_open", "job.pending",
        "job.progress", "job.completed", "run.finished", "run.error",
    }
    assert required <= set(EVENT_TYPES)

"""JSON-safe encoding at append: every logged event is valid JSON (toolplex.encoding)."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from pathlib import PurePosixPath

import pydantic
import pytest

from toolplex import Agent, EventLog, tool
from toolplex.encoding import jsonable
from toolplex.events import TextDelta, ToolOutputDelta
from toolplex.exceptions import EventTooLarge, UnserializableOutput
from toolplex.testing import Call, ScriptedModel, Step, check_protocol, collect, of_type


@dataclasses.dataclass
class Point:
    x: int
    when: datetime.date


class Model(pydantic.BaseModel):
    name: str
    id: uuid.UUID


class Colour(enum.Enum):
    RED = "red"


class Opaque:
    pass


def _strict(value: object) -> object:
    """What a strict RFC 8259 reader makes of the value's JSON."""
    text = json.dumps(value, allow_nan=False)
    return json.loads(text)


class TestJsonable:
    def test_values_with_an_obvious_json_form_get_it(self) -> None:
        uid = uuid.UUID(int=7)
        value = {
            "at": datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.UTC),
            "tags": {"b", "a"}, "pair": (1, 2), "raw": b"\x00hi",
            "price": decimal.Decimal("1.10"), "id": uid, "path": PurePosixPath("/tmp/x"),
            "point": Point(1, datetime.date(2026, 1, 2)), "model": Model(name="n", id=uid),
            "colour": Colour.RED, 3: "int key",
        }
        assert _strict(jsonable(value)) == {
            "at": "2026-12-01T09:30:00+00:00", "tags": ["a", "b"], "pair": [1, 2],
            "raw": {"$bytes": "AGhp"}, "price": "1.10", "id": str(uid), "path": "/tmp/x",
            "point": {"x": 1, "when": "2026-01-02"}, "model": {"name": "n", "id": str(uid)},
            "colour": "red", "3": "int key"}

    def test_non_finite_floats_become_strings_never_bare_nan(self) -> None:
        safe = jsonable([float("nan"), float("inf"), -float("inf"), 1.5])
        assert _strict(safe) == ["NaN", "Infinity", "-Infinity", 1.5]

    def test_plain_json_values_are_returned_as_they_are(self) -> None:
        value = {"a": [1, "x", None, True, {"b": 2.5}]}
        assert jsonable(value) is value, "no copy when nothing needs a JSON form"

    def test_a_value_with_no_json_form_is_refused_naming_its_type(self) -> None:
        with pytest.raises(UnserializableOutput, match="Opaque"):
            jsonable({"ok": 1, "bad": [Opaque()]})

    def test_a_cycle_is_refused_not_recursed_forever(self) -> None:
        loop: list[object] = []
        loop.append(loop)
        with pytest.raises(UnserializableOutput, match="nested deeper"):
            jsonable(loop)


class TestAppend:
    def test_append_stores_the_json_form(self) -> None:
        log = EventLog("s")
        event = log.append(ToolOutputDelta(run_id="r", call_id="c", attempt=1, index=0,
                                           data={"at": datetime.date(2026, 1, 1)}))
        assert event.to_dict()["data"] == {"at": "2026-01-01"}
        json.loads(event.to_json())

    def test_an_unencodable_event_never_enters_the_log(self) -> None:
        log = EventLog("s")
        with pytest.raises(UnserializableOutput):
            log.append(ToolOutputDelta(run_id="r", call_id="c", attempt=1, index=0,
                                       data=Opaque()))
        assert log.head_seq == 0, "nothing logged, no seq used"

    def test_an_event_over_max_event_bytes_is_refused(self) -> None:
        log = EventLog("s", max_event_bytes=1000)
        with pytest.raises(EventTooLarge):
            log.append(TextDelta(run_id="r", message_id="m", delta="é" * 600))  # 1,200 bytes
        log.append(TextDelta(run_id="r", message_id="m", delta="é" * 300))
        assert log.head_seq == 1


@tool
async def stamp(kind: str):  # type: ignore[no-untyped-def]
    """Return a value of the given kind."""
    if kind == "opaque":
        return {"value": Opaque()}
    return {"at": datetime.datetime(2026, 1, 1), "nan": float("nan"), "raw": b"ok"}


@tool
async def stream(n: int):  # type: ignore[no-untyped-def]
    """Yield a good chunk then an opaque one."""
    yield {"n": n}
    yield Opaque()


async def test_a_tool_returning_an_opaque_object_ends_unserializable_output() -> None:
    model = ScriptedModel([Step(calls=[Call("stamp", {"kind": "opaque"}),
                                       Call("stream", {"n": 1}),
                                       Call("stamp", {"kind": "rich"})]), Step(text="ok")])
    events = await collect(Agent(tools=[stamp, stream], model=model), "go")
    check_protocol(events)
    errors = [e["error"] for e in of_type(events, "tool.error")]
    assert [e["code"] for e in errors] == ["unserializable_output"] * 2
    assert all("Opaque" in e["message"] for e in errors), "the message names the type"
    (result,) = of_type(events, "tool.result")
    assert result["output"] == {"at": "2026-01-01T00:00:00", "nan": "NaN",
                                "raw": {"$bytes": "b2s="}}
    for event in events:
        json.dumps(event, allow_nan=False)

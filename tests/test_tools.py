from __future__ import annotations

from typing import Literal

import pytest

from toolplex import InvalidArguments, UsageError, tool
from toolplex.tools import Kind


@tool
def lookup(domain: str, limit: int = 5, region: Literal["eu", "us"] = "eu") -> dict:
    """Look a company up by its domain.

    Args:
        domain: The company's web domain.
        limit: How many records at most.
    """
    return {}


class TestSchema:
    def test_name_and_description_come_from_function_and_docstring(self) -> None:
        spec = lookup.spec()["function"]
        assert spec["name"] == "lookup"
        assert spec["description"] == "Look a company up by its domain."

    def test_parameters_come_from_signature_and_hints(self) -> None:
        params = lookup.parameters
        assert params["type"] == "object"
        assert params["required"] == ["domain"]
        assert params["properties"]["domain"]["type"] == "string"
        assert params["properties"]["limit"] == {
            "type": "integer", "default": 5, "description": "How many records at most."}
        assert params["properties"]["region"]["enum"] == ["eu", "us"]

    def test_arg_descriptions_come_from_the_docstring(self) -> None:
        assert lookup.parameters["properties"]["domain"]["description"] == (
            "The company's web domain.")

    def test_options_override_name_and_description(self) -> None:
        @tool(name="find", description="Find it.")
        def f(q: str) -> str:
            return q

        assert f.spec()["function"]["name"] == "find"
        assert f.description == "Find it."


class TestKinds:
    def test_sync_async_and_generator_functions_are_told_apart(self) -> None:
        @tool
        def a() -> int:
            return 1

        @tool
        async def b() -> int:
            return 1

        @tool
        async def c():  # type: ignore[no-untyped-def]
            yield 1

        assert (a.kind, b.kind, c.kind) == (Kind.SYNC, Kind.ASYNC, Kind.STREAM)

    def test_the_tool_stays_callable(self) -> None:
        assert lookup("acme.com") == {}

    def test_job_parameter_is_hidden_from_the_model(self) -> None:
        @tool(mode="human")
        async def approve(percent: int, job: object) -> None: ...

        assert "job" not in approve.parameters["properties"]
        assert approve.wants_job


class TestValidation:
    def test_valid_arguments_are_parsed_and_defaults_filled(self) -> None:
        assert lookup.validate('{"domain": "acme.com", "limit": "3"}') == {
            "domain": "acme.com", "limit": 3, "region": "eu"}

    def test_invalid_json_is_reported(self) -> None:
        with pytest.raises(InvalidArguments, match="not valid JSON"):
            lookup.validate('{"domain": ')

    def test_non_object_is_reported(self) -> None:
        with pytest.raises(InvalidArguments, match="must be a JSON object"):
            lookup.validate("[1, 2]")

    def test_missing_and_wrong_fields_are_named(self) -> None:
        with pytest.raises(InvalidArguments) as info:
            lookup.validate('{"limit": "many", "region": "asia"}')
        message = str(info.value)
        assert "domain" in message
        assert "limit" in message
        assert "region" in message


class TestUsageErrors:
    def test_star_args_cannot_be_described(self) -> None:
        with pytest.raises(UsageError, match=r"\*args"):
            @tool
            def bad(*items: str) -> None: ...

    def test_human_mode_needs_a_job_parameter(self) -> None:
        with pytest.raises(UsageError, match="job"):
            @tool(mode="human")
            async def bad(x: int) -> None: ...

    def test_auto_mode_needs_a_budget(self) -> None:
        with pytest.raises(UsageError, match="budget"):
            @tool(mode="auto")
            async def bad(x: int) -> None: ...

    def test_unknown_mode_is_refused(self) -> None:
        with pytest.raises(UsageError, match="mode"):
            tool(mode="later")(lambda: None)  # type: ignore[call-overload]

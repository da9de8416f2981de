"""/openapi.json: a valid OpenAPI document naming every HTTP route, for client generators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from openapi_spec_validator import validate
from starlette.routing import Route

from toolplex import create_app

from .conftest import Served


def _operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in spec["paths"].items() for method in item}


def test_the_document_is_valid_openapi_and_names_every_http_route(
        serve: Callable[..., Served]) -> None:
    served = serve()
    response = httpx.get(f"{served.http}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    spec = response.json()
    validate(spec)  # raises on an invalid document
    assert spec["openapi"].startswith("3.1")
    app = create_app()
    served_routes = {(route.path, method) for route in app.routes if isinstance(route, Route)
                     for method in (route.methods or ()) if method != "HEAD"}
    assert _operations(spec) == served_routes, "the document and the routes must not drift"
    assert len({op["operationId"] for item in spec["paths"].values()
                for op in item.values()}) == len(served_routes), "operation ids are unique"


def test_answers_are_the_documented_ones(serve: Callable[..., Served]) -> None:
    served = serve()
    spec = httpx.get(f"{served.http}/openapi.json").json()

    def documented(path: str, method: str, response: httpx.Response) -> None:
        codes = spec["paths"][path][method]["responses"]
        assert str(response.status_code) in codes, (path, method, response.status_code)
        media = codes[str(response.status_code)].get("content", {})
        if "application/json" in media:
            assert response.headers["content-type"].startswith("application/json")

    with httpx.Client(base_url=served.http) as client:
        created = client.post("/v1/sessions")
        documented("/v1/sessions", "post", created)
        session = created.json()
        auth = {"authorization": f"Bearer {session['token']}"}
        sid = session["session_id"]
        documented("/v1/sessions/{session_id}/runs", "post",
                   client.post(f"/v1/sessions/{sid}/runs", json={"input": "hi"}, headers=auth))
        documented("/v1/sessions/{session_id}/runs", "post",
                   client.post(f"/v1/sessions/{sid}/runs", json={"input": "hi"}))
        documented("/v1/sessions/{session_id}/runs/{run_id}/cancel", "post",
                   client.post(f"/v1/sessions/{sid}/runs/r_none/cancel", headers=auth))
        documented("/v1/jobs/{job_id}", "get", client.get("/v1/jobs/j_none", headers=auth))
        documented("/healthz", "get", client.get("/healthz"))
        documented("/v1/sessions", "post", client.post(
            "/v1/sessions", content="x", headers={"content-type": "text/plain"}))
        documented("/v1/sessions", "post", client.post(
            "/v1/sessions", json={}, headers={"origin": "https://elsewhere.example"}))

"""docs/openapi.json is the generator's output, is valid OpenAPI 3.1, and documents
every HTTP entrypoint intake has."""

from __future__ import annotations

import inspect
import json
import re

import pytest

from services.intake import openapi


def test_committed_document_matches_the_generator() -> None:
    committed = openapi.DOC_PATH.read_text(encoding="utf-8")
    assert committed == openapi.render(), "docs/openapi.json is out of date: run `gridbus openapi --write`"


def test_document_is_valid_openapi() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(json.loads(openapi.render()))


def _routes() -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every @http entrypoint of the intake service class."""
    from nameko.web.handlers import HttpRequestHandler

    from services.intake.boundary import FallbackApi
    from services.intake.service import IntakeService

    routes = set()
    fallback = {
        ext.url
        for _, fn in inspect.getmembers(FallbackApi, inspect.isfunction)
        for ext in getattr(fn, "nameko_entrypoints", ())
    }
    for cls in (IntakeService,):
        for _, fn in inspect.getmembers(cls, inspect.isfunction):
            for ext in getattr(fn, "nameko_entrypoints", ()):
                # the console's HTML pages (services/intake/console/) are not part of the API
                if (
                    isinstance(ext, HttpRequestHandler)
                    and ext.url not in fallback
                    and not ext.url.startswith("/console")
                ):
                    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", ext.url)
                    routes.add((ext.method.upper(), path))
    return routes


def test_every_http_entrypoint_is_documented() -> None:
    doc = openapi.document()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    routes = _routes()
    assert routes, "found no entrypoints: has nameko changed how it marks them?"
    assert routes <= documented, f"undocumented: {sorted(routes - documented)}"
    assert documented <= routes, f"documented but not served: {sorted(documented - routes)}"


def test_internal_bookkeeping_is_not_in_the_case_schema() -> None:
    assert "applied_messages" not in openapi.document()["components"]["schemas"]["CaseView"]["properties"]


def _model_of(schema: dict) -> tuple[type, bool] | None:
    """The pydantic model a response/request schema refers to, and whether it is a list."""
    from services.intake.openapi import MODELS

    array = schema.get("type") == "array"
    ref = (schema.get("items") if array else schema or {}).get("$ref", "")
    name = ref.rsplit("/", 1)[-1]
    model = next((m for m in MODELS if m.__name__ == name), None)
    return (model, array) if model else None


def test_every_operation_has_examples_that_the_models_accept() -> None:
    from services.intake.openapi_examples import EXAMPLES

    doc = openapi.document()
    operations = {(m, p): op for p, ops in doc["paths"].items() for m, op in ops.items()}
    assert set(EXAMPLES) == set(operations), "every operation needs examples (services/intake/openapi_examples.py)"
    for (method, path), op in operations.items():
        answers = [r for code, r in op["responses"].items() if code.startswith("2")]
        assert any("example" in media for r in answers for media in r.get("content", {}).values()), (method, path)
        media_types = list(op.get("requestBody", {}).get("content", {}).values())
        assert all("example" in m or "examples" in m for m in media_types), (method, path)
        checked = [
            (m["schema"], [m["example"]] if "example" in m else [e["value"] for e in m["examples"].values()])
            for m in media_types
        ]
        checked += [
            (m["schema"], [m["example"]])
            for r in op["responses"].values()
            for m in r.get("content", {}).values()
            if "example" in m
        ]
        for schema, values in checked:
            found = _model_of(schema)
            if found is None:
                continue  # an inline schema (no model in the code)
            model, array = found
            for value in values:
                for item in value if array else [value]:
                    model.model_validate(item)


def test_the_report_example_resolves_to_a_patch_without_naming_it() -> None:
    from services.intake.openapi_examples import REPORT
    from shared.grid import load_grid

    assert "grid" not in REPORT["location"]
    cell = load_grid().resolve(REPORT["location"]["lat"], REPORT["location"]["lon"])
    assert cell.code == "450305003002001"


def test_every_operation_names_the_roles_its_entrypoint_admits() -> None:
    """`x-roles` is what the boundary checks (services/intake/boundary.py), route by route."""
    from services.intake.boundary import ApiEntrypoint
    from services.intake.service import IntakeService

    doc = openapi.document()
    checked = 0
    for _, fn in inspect.getmembers(IntakeService, inspect.isfunction):
        for ext in getattr(fn, "nameko_entrypoints", ()):
            if isinstance(ext, ApiEntrypoint) and "<path:" not in ext.url:
                op = doc["paths"][re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", ext.url)][ext.method.lower()]
                assert set(op.get("x-roles", [])) == {r.value for r in ext.roles}, ext.url
                if ext.roles:
                    assert {"403", "429", "503"} <= set(op["responses"]), ext.url
                checked += 1
    assert checked > 10

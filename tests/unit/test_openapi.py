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
    fallback = {ext.url for _, fn in inspect.getmembers(FallbackApi, inspect.isfunction)
                for ext in getattr(fn, "nameko_entrypoints", ())}
    for cls in (IntakeService,):
        for _, fn in inspect.getmembers(cls, inspect.isfunction):
            for ext in getattr(fn, "nameko_entrypoints", ()):
                # the console's HTML pages (services/console/) are not part of the API
                if isinstance(ext, HttpRequestHandler) and ext.url not in fallback \
                        and not ext.url.startswith("/console"):
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

"""intake's service module imports (its HTTP mixins are only imported by it, so a broken
decorator in one would otherwise surface only when the service starts), and the command
centre's routes are served."""

from __future__ import annotations


def test_intake_service_imports_and_serves_the_hands_routes() -> None:
    from services.intake.service import IntakeService

    routes = set()
    for name in dir(IntakeService):
        for ep in getattr(getattr(IntakeService, name), "nameko_entrypoints", ()):
            url = getattr(ep, "url", None)
            if url:
                routes.add((ep.method, url))
    for route in [
        ("POST", "/v1/cases/<string:case_id>/dispatch"),
        ("POST", "/v1/cases/<string:case_id>/evaluation"),
        ("GET", "/v1/reports/meeting"),
    ]:
        assert route in routes, sorted(routes)

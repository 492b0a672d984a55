"""就地处置 in sla's counts, with the closing arriving before or after resolve_on_site
(intake publishes them back to back; consumers may take them in either order), and the
verification draw."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.intake.cases import drawn_for_verification
from services.sla.state import CaseClocks, Effects, Engine
from shared.models import CaseStatus, CaseSummary, CaseUpdated, Mode721
from tests.unit.test_sla_engine import engine  # noqa: F401 (fixture)

CST = timezone(timedelta(hours=8))
AT = datetime(2026, 11, 27, 9, 0, tzinfo=CST)
CASE, GRID, STREET = "450305-20261127-000009", "450305001001002", "450305001"
SUMMARY = CaseSummary(category="04009", severity="normal", grid=GRID, street=STREET, registered_at=AT)


def resolved_on_site() -> CaseUpdated:
    return CaseUpdated(
        message_id="m-resolve",
        case_id=CASE,
        correlation_id="r",
        occurred_at=AT,
        from_status=CaseStatus.registered,
        to_status=CaseStatus.resolved,
        action="resolve_on_site",
        actor="reporter:w-1",
        mode=Mode721.service,
        case=SUMMARY,
    )


def closed_by_sampling() -> CaseUpdated:
    return CaseUpdated(
        message_id="m-close",
        case_id=CASE,
        correlation_id="r",
        occurred_at=AT,
        from_status=CaseStatus.resolved,
        to_status=CaseStatus.closed,
        action="verify_pass",
        actor="intake:sampling",
        mode=Mode721.service,
        case=SUMMARY,
    )


def counts(*fxs: Effects) -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for fx in fxs:
        for _, scope, key, counter, n in fx.counts:
            out[(scope, key, counter)] = out.get((scope, key, counter), 0) + n
    return out


def apply(engine: Engine, events: list[CaseUpdated]) -> dict[tuple[str, str, str], int]:  # noqa: F811
    doc: CaseClocks | None = None
    fxs = []
    for ev in events:
        if doc is None:
            doc, fx = engine.on_site(ev, AT.timestamp())
        else:
            fx = engine.updated(doc, ev, AT.timestamp())
        fxs.append(fx)
    return counts(*fxs)


@pytest.mark.parametrize("order", ["resolve first", "close first"])
def test_on_site_counts_once_in_either_order(engine: Engine, order: str) -> None:  # noqa: F811
    events = [resolved_on_site(), closed_by_sampling()]
    if order == "close first":
        events.reverse()
    c = apply(engine, events)
    assert c[("street", STREET, "registered")] == 1
    assert c[("street", STREET, "resolved")] == 1 and c[("street", STREET, "resolved_on_time")] == 1
    assert c[("street", STREET, "on_site")] == 1 and c[("street", STREET, "closed")] == 1
    for scope, key in (("street", STREET), ("community", GRID[:12]), ("patch", GRID)):
        assert c[(scope, key, "mode_service")] == 1, (scope, c)
    assert not any(k[0] == "dept" for k in c)  # no department ever had it


def test_draw_is_fixed_and_near_the_rate() -> None:
    ids = [f"450305-20261127-{n:06d}" for n in range(2000)]
    drawn = [i for i in ids if drawn_for_verification(i, 0.3)]
    assert 0.26 < len(drawn) / len(ids) < 0.34
    assert drawn == [i for i in ids if drawn_for_verification(i, 0.3)]
    assert all(drawn_for_verification(i, 1.0) for i in ids) and not any(drawn_for_verification(i, 0.0) for i in ids)

"""The joint-meeting agenda from a realistic fixture month (tests/meeting_month.py) on the
real Redis: the planted hot spot is listed, with every other planted signal, in Markdown,
CSV and JSON, from the command line too."""

from __future__ import annotations

import csv
import io
import json

import pytest
import redis
from click.testing import CliRunner

from services.cli import main
from services.intake.reports.meeting import agenda_for, markdown, to_csv
from services.intake.store import CaseStore
from tests.meeting_month import CST, HOT_CATEGORY, HOT_PATCH, MONTH_END, MONTH_START, NOW, STREET, build_month

pytestmark = pytest.mark.integration


def test_agenda_of_the_fixture_month(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    planted = build_month(store)
    agenda = agenda_for(store, STREET, MONTH_START, MONTH_END, now=NOW)

    top = agenda.hot_spots[0]
    assert (top.grid, top.category, top.count, top.open) == (HOT_PATCH, HOT_CATEGORY, 5, 2)
    assert top.cases == planted.hot_spot  # the two duplicates are not counted
    assert top.patch == "辰山社区第二片区" and top.category_name == "暴露垃圾"
    assert all(h.count >= 3 for h in agenda.hot_spots)
    assert all(not h.grid.startswith("450305003") for h in agenda.hot_spots)  # another street's case
    assert [f.case_id for f in agenda.disputed] == planted.disputed
    assert "sanitation, cityman" in agenda.disputed[0].detail
    assert sorted(f.case_id for f in agenda.escalated) == sorted(planted.escalated)
    assert [f.case_id for f in agenda.rework] == planted.rework
    lighting = next(o for o in agenda.overdue if o.dept == "lighting")
    assert lighting.cases == sorted(planted.overdue_lighting) and lighting.hours_late_max == 30.0
    water = next(o for o in agenda.overdue if o.dept == "water")
    assert water.still_open == 1  # still in progress past its deadline
    assert [(m.merchant_id, m.count) for m in agenda.merchants] == [("M-0731", 3), ("M-1102", 2)]

    md = markdown(agenda, CST)
    assert "| 辰山社区第二片区 (450305001001002) | 暴露垃圾 (06010) | 5 | 2 |" in md
    assert "## 6. 门前三包 repeat offenders" in md and "M-0731" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(agenda))))
    assert {"section": "hot_spot", "key": f"{HOT_PATCH}/{HOT_CATEGORY}"}.items() <= rows[0].items()
    assert {r["section"] for r in rows} == {"hot_spot", "disputed", "escalated", "rework", "overdue", "merchant"}

    out = CliRunner().invoke(
        main,
        ["report", "meeting", "--street", STREET, "--from", "2026-11-01", "--to", "2026-11-30", "--format", "json"],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["hot_spots"][0]["cases"] == planted.hot_spot
    bad = CliRunner().invoke(
        main, ["report", "meeting", "--street", "450305999", "--from", "2026-11-01", "--to", "2026-11-30"]
    )
    assert bad.exit_code != 0 and "not a street" in bad.output

"""The operations console in a real browser (Debian chromium driven by playwright) against
the running stack: log in with an ops key, see a new report appear on the board by
itself, dispatch a triage case by hand from the triage queue, open its timeline.

Screenshots of the board and the case page go to $CONSOLE_SCREENSHOTS when it is set
(docs/screenshots/ holds the committed ones)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from services.intake.auth import Role
from tests.e2e.conftest import report, stack_key, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# never download a browser: the system's chromium, headless, quiet (no network of its own)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TRIAGE_CATEGORY = "01023"  # 不明井盖: deliberately routed to the grid station (config/routes.yaml)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def shot(page: Any, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=False)


def test_console_login_board_dispatch_timeline(stack: dict[str, Any], page: Any) -> None:
    base = stack["base"]
    ops_key = stack_key(stack["env"], Role.ops)

    # not logged in: the login page, and a wrong key is refused with the reason
    page.goto(f"{base}/console/board")
    assert "/console/login" in page.url
    page.fill("#key", "gbk_000000000000.wrongwrongwrongwrongwrong")
    page.click("button[type=submit]")
    assert "登录失败" in page.inner_text(".error")

    page.fill("#key", ops_key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/board$"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "gridbus_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "监督看板" in page.inner_text("nav")

    # a new report appears on the open board without reloading it (console.js refreshes)
    # inside the pilot patch 辰山社区第一片区 (its polygon in config/grid.yaml), so the map shows it there
    body = report(
        category=TRIAGE_CATEGORY,
        description="辰山路口井盖权属不明，井盖松动",
        filing_condition=None,
        location={"lat": 25.2800, "lon": 110.3121, "address": "七星区辰山路口", "grid": "450305001001001"},
    )
    r = httpx.post(f"{base}/v1/reports", json=body, headers=stack["auth"], timeout=5)
    assert r.status_code == 202, r.text
    case_id = r.json()["case_id"]
    row = page.wait_for_selector(f"#live tr[data-case='{case_id}']", timeout=20_000)
    # the router sends it to the grid station: the row says 待分拨 once that is applied
    wait_for(
        lambda: "待分拨" in (page.query_selector(f"#live tr[data-case='{case_id}']") or row).inner_text(),
        timeout=15,
        interval=0.5,
    )
    assert int(page.inner_text("#t-triage")) >= 1
    shot(page, "board.png")

    # dispatch it by hand from the triage queue, to the municipal department
    page.click("nav >> text=待办队列")
    form = page.locator(f"#triage tr[data-case='{case_id}'] form")
    form.locator("select[name=dept]").select_option("municipal")
    form.locator("input[name=note]").fill("经现场核实为市政井盖，派市政处置")
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/console/triage\?done=dispatch"))
    assert "派遣已提交" in page.inner_text(".notice")

    auth = {"Authorization": f"Bearer {ops_key}"}

    def dispatched() -> bool:
        case = httpx.get(f"{base}/v1/cases/{case_id}", headers=auth, timeout=5).json()
        return any(a["active"] and a["dept"] == "municipal" for a in case["assignments"])

    assert wait_for(dispatched, timeout=15, interval=0.3), "the dispatch by hand did not reach the case"

    # its case page: the timeline has the dispatch by hand, the map shows the position
    page.goto(f"{base}/console/cases/{case_id}")
    timeline = page.inner_text("#timeline")
    assert "dispatched by hand" in timeline and "经现场核实为市政井盖" in timeline
    assert page.locator("svg circle.pin").count() == 2  # the neighbourhood and the district
    assert "市政" in page.inner_text("table.cases")
    # every notification of the case: at least the grid station's webhook (to the test's sink)

    def notified() -> bool:
        page.reload()
        return "已送达" in page.inner_text("#notifications")

    assert wait_for(notified, timeout=15, interval=1), page.inner_text("#notifications")
    shot(page, "case.png")


def test_console_refuses_forms_without_the_session_token(stack: dict[str, Any]) -> None:
    """CSRF: a POST with the cookie but without the form's token changes nothing."""
    base = stack["base"]
    with httpx.Client(base_url=base, timeout=5, follow_redirects=False) as client:
        r = client.post("/console/login", data={"key": stack_key(stack["env"], Role.ops), "next": "/console/board"})
        assert r.status_code == 303 and "HttpOnly" in r.headers["set-cookie"]
        created = httpx.post(f"{base}/v1/reports", json=report(), headers=stack["auth"], timeout=5).json()
        r = client.post(f"/console/cases/{created['case_id']}/cancellation", data={"reason": "测试"})
        assert r.status_code == 403
        r = client.post(
            f"/console/cases/{created['case_id']}/cancellation",
            data={"reason": "测试", "csrf": "forged"},
            headers={"Origin": "http://evil.example"},
        )
        assert r.status_code == 403
        case = httpx.get(f"{base}/v1/cases/{created['case_id']}", headers=stack["auth"], timeout=5).json()
        assert case["status"] != "cancelled"
        # a grid_app key may not use the console
        r = client.post("/console/login", data={"key": stack["auth"]["Authorization"].split()[1]})
        assert r.status_code == 401


def test_a_station_key_sees_its_own_street_only(stack: dict[str, Any]) -> None:
    base = stack["base"]
    other = httpx.post(f"{base}/v1/reports", json=report(), headers=stack["auth"], timeout=5).json()["case_id"]
    station = stack_key(stack["env"], Role.station, street="450305003")
    with httpx.Client(base_url=base, timeout=5, follow_redirects=True) as client:
        r = client.post("/console/login", data={"key": station, "next": "/console/board"})
        assert r.status_code == 200 and "station · 穿山街道" in r.text
        matrix = r.text.split('class="matrix"', 1)[1].split("</table>", 1)[0]
        assert "穿山街道" in matrix and "七星区街道" not in matrix
        assert other not in r.text
        # 七星区街道's case: refused exactly as the API refuses this key
        api = httpx.get(f"{base}/v1/cases/{other}", headers={"Authorization": f"Bearer {station}"}, timeout=5)
        assert api.status_code in (403, 404)
        r = client.get(f"/console/cases/{other}")
        assert r.status_code == api.status_code and "error" in r.text

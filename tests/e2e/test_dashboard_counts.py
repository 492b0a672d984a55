"""The dashboard tells the truth: a real Prometheus scrapes a fresh stack of the four
services; every gridbus panel query of deploy/grafana/dashboards/gridbus.json shows 0 (not
"No data") before any traffic, and after traffic the count panels equal the raw counters
the services expose, exactly. No alert fires on normal traffic.

The queries are evaluated at the instant of the owning service's latest scrape: there
Prometheus's increase() has nothing to extrapolate (every series starts at 0, so the start
adds nothing either), and what the panel shows is what the counters say. The RabbitMQ
panels are left out (they read the broker's own per-queue gauges of every vhost).
Run with `-s` to see the figures.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.intake.auth import Role
from shared import metrics
from tests.conftest import wait_for
from tests.e2e.conftest import report, running_stack, spread_location, stack_key
from tests.integration.test_prometheus_scrape import PROMETHEUS, _api, _wait_for, running_prometheus

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PROMETHEUS is None, reason="no `prometheus` binary: deploy/ci/validate.sh --install-only"),
]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "router", "sla", "notifier")
#: one patch per street of config/grid.yaml
CELLS = ("450305001001001", "450305002001001", "450305003001001", "450305004001001")
TRIAGE_CATEGORY = "01023"  # 不明井盖: routes.yaml sends it to the grid station on purpose
#: panels whose value is a rate of something that has not happened yet: undefined, shown
#: as the panel's noValue text ("–"), never a false 0 %
UNDEFINED_BEFORE_TRAFFIC = {
    (13, "A"),
    (14, "A"),
    (15, "A"),
    (20, "A"),
    (20, "C"),
    (20, "E"),
    (21, "A"),
    (21, "B"),
    (21, "C"),
}
#: count panels → the raw counter family and the label filter the panel applies
COUNT_PANELS = {
    2: ("gridbus_reports_received_total", lambda labels: labels["outcome"] != "invalid"),
    3: ("gridbus_cases_registered_total", None),
    4: ("gridbus_cases_dispatched_total", None),
    5: ("gridbus_cases_unroutable_total", None),
    6: ("gridbus_deadlines_breached_total", None),
}
#: per-hour panels (increase over 1 h by some labels) → family and the labels grouped by
BY_LABEL_PANELS = {
    16: ("gridbus_sla_escalations_total", ("dept", "level")),
    17: ("gridbus_deadlines_breached_total", ("dept", "deadline")),
    18: ("gridbus_deadline_warnings_total", ("dept", "deadline")),
    34: ("gridbus_notification_deliveries_total", ("channel", "outcome")),
}


def _owner(family: str) -> str:
    for metric, owner in metrics.declared():
        if family.removesuffix("_total") == metric._name:
            return owner[0]
    raise KeyError(family)


def _panels() -> list[tuple[int, str, str]]:
    dash = json.loads((ROOT / "deploy/grafana/dashboards/gridbus.json").read_text(encoding="utf-8"))
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"].replace("$__range", "1h").replace("$dept", ".*").replace("$street", ".*")
            if "gridbus_" in expr and "rabbitmq_" not in expr:
                out.append((panel["id"], t["refId"], expr))
    return out


def _raw(stack: dict[str, Any], service: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    port = stack["settings"].metrics_port(service)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.fixture(scope="module")
def fresh(vhost_factory: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # no SMS provider and no mail relay, as the documented compose stack: those channels are off
    with running_stack(vhost_factory, redis_url, tmp_path_factory, tag="dash", sms=False) as stack:
        yield stack


@pytest.fixture(scope="module")
def prometheus(fresh: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = fresh["settings"]
    targets = {s: settings.metrics_port(s) for s in SERVICES}
    with running_prometheus(tmp_path_factory.mktemp("prometheus-dash"), targets) as (base, proc):

        def scraped_twice() -> bool:  # every service up, with two samples already
            r = _api(base, "query", query="count_over_time(up[1m]) >= 2 and up == 1")["result"]
            return {x["metric"]["job"] for x in r} == set(SERVICES)

        _wait_for("two scrapes of each service", scraped_twice, proc)
        yield base


def _last_scrape(base: str, job: str) -> float:
    [row] = _api(base, "query", query=f'timestamp(up{{job="{job}"}})')["result"]
    return float(row["value"][1])


def _query(base: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    return _api(base, "query", **params)["result"]


def test_panels_show_zero_before_traffic_then_the_exact_counts(fresh: dict[str, Any], prometheus: str) -> None:
    base = prometheus
    # ---------------------------------------------------------------- before any traffic
    shows: dict[int, bool] = {}  # a panel has data when any of its queries has
    nonzero = []
    for pid, ref, expr in _panels():
        result = _query(base, expr)
        if (pid, ref) in UNDEFINED_BEFORE_TRAFFIC:
            assert result == [], f"panel {pid}{ref} shows a rate of nothing: {result}"
            continue
        shows[pid] = shows.get(pid, False) or bool(result)
        if pid in COUNT_PANELS or pid in BY_LABEL_PANELS:
            nonzero += [(pid, ref, r) for r in result if float(r["value"][1]) != 0]
    empty = sorted(pid for pid, has in shows.items() if not has)
    assert len(shows) >= 15 and empty == [], f"panels with No data on a fresh stack: {empty}"
    assert nonzero == [], f"count panels not at 0 before traffic: {nonzero}"
    print(
        "\nbefore traffic: every count panel 0 —",
        {pid: _query(base, expr)[0]["value"][1] for pid, _, expr in _panels() if pid in COUNT_PANELS},
    )

    # ---------------------------------------------------------------- traffic
    lighting = stack_key(fresh["env"], Role.department, "lighting")
    routed, triaged = [], []
    for cell in CELLS * 2:
        r = httpx.post(
            f"{fresh['base']}/v1/reports", json=report(location=spread_location(cell)), headers=fresh["auth"], timeout=5
        )
        assert r.status_code == 202, r.text
        routed.append(r.json()["case_id"])
    for cell in CELLS[:2]:
        body = report(category=TRIAGE_CATEGORY, filing_condition=None, location=spread_location(cell))
        r = httpx.post(f"{fresh['base']}/v1/reports", json=body, headers=fresh["auth"], timeout=5)
        assert r.status_code == 202, r.text
        triaged.append(r.json()["case_id"])
    again = httpx.post(f"{fresh['base']}/v1/reports", json={**body}, headers=fresh["auth"], timeout=5)
    assert again.status_code == 200  # the same report id: repeated, not a new case
    bad = httpx.post(
        f"{fresh['base']}/v1/reports", json={**report(), "category": "nope"}, headers=fresh["auth"], timeout=5
    )
    assert bad.status_code == 422

    def status(case_id: str) -> str:
        return httpx.get(f"{fresh['base']}/v1/cases/{case_id}", headers=fresh["auth"], timeout=5).json()["status"]

    assert wait_for(lambda: all(status(c) == "dispatched" for c in routed), 30), [status(c) for c in routed]
    for case_id in routed[:3]:  # three acknowledged in time; the others miss the 3 s deadline
        r = httpx.post(
            f"{fresh['base']}/v1/cases/{case_id}/replies",
            headers={"Authorization": f"Bearer {lighting}"},
            json={"reply_id": uuid.uuid4().hex[:12], "action": "acknowledge", "note": "收到"},
            timeout=5,
        )
        assert r.status_code == 200, r.text

    # until the compared counters have stood still for 4 s (breaches, escalations, notifications
    # done; the timers' own entrypoint counts never stand still and are not compared)
    compared = (
        {f for f, _ in COUNT_PANELS.values()} | {f for f, _ in BY_LABEL_PANELS.values()} | {"gridbus_replies_total"}
    )

    def snapshot() -> dict[str, float]:
        out = {}
        for service in SERVICES:
            for name, rows in _raw(fresh, service).items():
                if name in compared:
                    out[f"{service}:{name}"] = sum(v for _, v in rows)
        return out

    last, still_since = snapshot(), time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() - still_since < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = snapshot()
        if now != last:
            last, still_since = now, time.monotonic()
    assert time.monotonic() - still_since >= 4, "the counters never settled"
    assert last["sla:gridbus_deadlines_breached_total"] >= 5  # the five unacknowledged cases
    # at least two scrapes of the settled values (Prometheus scrapes every second here)
    settled_at = time.time()
    assert wait_for(lambda: all(_last_scrape(base, s) >= settled_at + 1 for s in SERVICES), 15), "scrapes stopped"

    # ---------------------------------------------------------------- panel == raw counter
    raw = {s: _raw(fresh, s) for s in SERVICES}
    at = {s: _last_scrape(base, s) for s in SERVICES}
    panels = {(pid, ref): expr for pid, ref, expr in _panels()}
    figures = {}
    for pid, (family, keep) in COUNT_PANELS.items():
        service = _owner(family)
        expected = sum(v for labels, v in raw[service][family] if keep is None or keep(labels))
        [row] = _query(base, panels[(pid, "A")], at[service])
        figures[pid] = (family, float(row["value"][1]), expected)
        assert float(row["value"][1]) == expected, (pid, family, row, expected)
    for pid, (family, by) in BY_LABEL_PANELS.items():
        service = _owner(family)
        expected: dict[tuple[str, ...], float] = {}
        for labels, v in raw[service][family]:
            key = tuple(labels[b] for b in by)
            expected[key] = expected.get(key, 0) + v
        shown = {
            tuple(r["metric"][b] for b in by): float(r["value"][1])
            for r in _query(base, panels[(pid, "A")], at[service])
        }
        assert shown == expected, (pid, family)
        figures[pid] = (family, sum(shown.values()), sum(expected.values()))
    # acknowledged within deadline: the panel's ratio is the raw counters' ratio
    replies = raw["intake"]["gridbus_replies_total"]
    acks = sum(v for lb, v in replies if lb["dept"] == "lighting" and lb["action"] == "acknowledge")
    on_time = sum(
        v for lb, v in replies if lb["dept"] == "lighting" and lb["action"] == "acknowledge" and lb["on_time"] == "yes"
    )
    shown = {r["metric"]["dept"]: float(r["value"][1]) for r in _query(base, panels[(15, "A")], at["intake"])}
    assert acks == 3 and shown == {"lighting": on_time / acks}
    print("after traffic (panel, family, shown, raw):")
    for pid, (family, value, expected) in sorted(figures.items()):
        print(f"  panel {pid:>2} {family:<42} {value:>6g} {expected:>6g}")
    assert figures[3][2] == len(routed) + len(triaged) and figures[5][2] == len(triaged)
    assert figures[2][2] == len(routed) + len(triaged) + 1  # registered + repeated

    # ---------------------------------------------------------------- no alert on normal traffic
    firing = [a["labels"] for a in _api(base, "alerts")["alerts"] if a["state"] == "firing"]
    assert firing == [], firing

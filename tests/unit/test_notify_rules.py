"""notify.yaml (the shipped file and errors with line and field), who gets what, the
retry schedule and quiet-hours arithmetic. No broker, no Redis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.notifier.addresses import AddressBook
from services.notifier.channels.base import ChannelName, DeliveryOutcome
from services.notifier.deliveries import Delivery, delivery_id, next_step
from services.notifier.planner import CaseFacts, Planner
from services.notifier.render import Renderer
from services.notifier.subscriptions import NOTIFIED_STATUSES, ConfigError, QuietHours, load_notify
from shared import topology
from shared.catalog import load_catalog
from shared.config import REPO_ROOT, Settings
from shared.departments import load_departments
from shared.grid import load_grid
from shared.models import (
    Assignment,
    Case,
    CaseDispatched,
    CaseEscalated,
    CaseStatus,
    CaseSummary,
    CaseUpdated,
    DeadlineBreached,
    DispatchWithdrawn,
    Location,
    ReporterRole,
    Severity,
)

CONFIG = REPO_ROOT / "config"
TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)  # 10:00 in Guilin
GRID = "450305001001001"


@pytest.fixture(scope="module")
def planner() -> Planner:
    departments = load_departments(CONFIG / "departments.yaml")
    notify = load_notify(CONFIG / "notify.yaml", departments={d.code for d in departments})
    grid = load_grid(CONFIG / "grid.yaml")
    book = AddressBook(
        departments,
        grid,
        notify,
        Settings(webhook_url_template="http://sink/{dept}", grid_app_webhook_url="http://app/hook"),
    )
    return Planner(
        notify,
        book,
        Renderer(public_base_url="https://gb.example.cn", timezone="Asia/Shanghai"),
        grid,
        load_catalog(CONFIG / "catalog.tsv"),
    )


def summary(severity: str = "normal") -> CaseSummary:
    return CaseSummary(
        category="01037",
        severity=Severity(severity),
        grid=GRID,
        street="450305001",
        address="辰山路8号",
        description="路灯不亮",
        registered_at=NOW,
    )


def dispatched(severity: str = "normal", message_id: str = "m-1") -> CaseDispatched:
    return CaseDispatched(
        message_id=message_id,
        case_id="450305-20261127-000001",
        correlation_id="r-1",
        case=summary(severity),
        assignments=[
            Assignment(
                dept="lighting",
                street="450305001",
                level=3,
                order_id="o-1",
                dispatched_at=NOW,
                ack_due=NOW + timedelta(hours=2),
                handle_due=NOW + timedelta(hours=24),
            )
        ],
    )


def case(reporter: str = "w-1", duplicates: list[str] = ()) -> Case:
    return Case(
        case_id="450305-20261127-000001",
        report_id="rep",
        correlation_id="r-1",
        status=CaseStatus.resolved,
        category="01037",
        severity=Severity.normal,
        description="路灯不亮",
        location=Location(lat=25.28, lon=110.31, grid=GRID),
        grid=GRID,
        street="450305001",
        reporter_id=reporter,
        reporter_role=ReporterRole.grid_officer,
        observed_at=NOW,
        registered_at=NOW,
        updated_at=NOW,
        duplicates=list(duplicates),
        assignments=[Assignment(dept="lighting", street="450305001", level=3, order_id="o-1", dispatched_at=NOW)],
    )


def pairs(deliveries: list[Delivery]) -> set[tuple[str, str]]:
    return {(d.recipient, d.channel.value) for d in deliveries}


# ------------------------------------------------------------------ notify.yaml


def test_shipped_notify_yaml_covers_every_event(planner: Planner) -> None:
    events = {s.event for s in planner.notify.subscriptions}
    assert events == {
        "case_dispatched",
        "deadline_warning",
        "deadline_breached",
        "case_escalated",
        "case_updated",
        "case_unroutable",
        "dispatch_withdrawn",
        "notification_failed",
    }


@pytest.mark.parametrize(
    ("snippet", "line", "field", "message"),
    [
        (
            "  - event: case_updated\n    notify:\n      - {to: reporter, channels: [webhook]}\n",
            2,
            "subscriptions.0",
            "to_status",
        ),
        (
            "  - event: case_updated\n    when: {to_status: [acknowledged]}\n"
            "    notify:\n      - {to: reporter, channels: [webhook]}\n",
            2,
            "subscriptions.0",
            "resolved/closed/reopened",
        ),
        (
            "  - event: case_dispatched\n    notify:\n      - {to: reporter, channels: [sms]}\n",
            4,
            "subscriptions.0.notify.0",
            "reporter cannot be reached on sms",
        ),
        (
            "  - event: case_dispatched\n    notify:\n      - {to: commanders, channels: [wecom]}\n",
            4,
            "subscriptions.0.notify.0",
            "level",
        ),
        (
            "  - event: case_fixed\n    notify:\n      - {to: liaison, channels: [wecom]}\n",
            2,
            "subscriptions.0.event",
            "case_dispatched",
        ),
        (
            "  - event: case_dispatched\n    when: {dept: [bakery]}\n"
            "    notify:\n      - {to: liaison, channels: [wecom]}\n",
            3,
            "subscriptions.0.when.dept",
            "unknown department 'bakery'",
        ),
        (
            "  - event: case_dispatched\n    notify:\n      - {to: liaison, channels: [sms]}\n",
            4,
            "subscriptions.0.notify.0.channels",
            "sms_templates has no case_dispatched",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, snippet: str, line: int, field: str, message: str) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text("subscriptions:\n" + snippet, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_notify(path, departments={d.code for d in load_departments(CONFIG / "departments.yaml")})
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert message in err.value.message and str(path) in str(err.value)


def test_bad_quiet_hours_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text(
        "quiet_hours:\n  defaults:\n    liaison: {start: '25:00', end: '07:00'}\n"
        "subscriptions:\n  - event: case_escalated\n"
        "    notify:\n      - {to: operations_centre, channels: [email]}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_notify(path)
    assert err.value.line == 3 and err.value.field.startswith("quiet_hours.defaults.liaison")


# ------------------------------------------------------------------ who gets what


def test_dispatch_reaches_liaison_by_robot_with_sms_fallback_and_the_department_webhook(planner: Planner) -> None:
    out = planner.plan(dispatched())
    assert pairs(out) == {("liaison:lighting:450305001", "wecom"), ("dept:lighting", "webhook")}
    liaison = next(d for d in out if d.channel is ChannelName.wecom)
    assert liaison.fallbacks == [ChannelName.sms] and not liaison.urgent
    assert liaison.subject == "【派遣】450305-20261127-000001 路灯（01037）"
    assert "七星区街道 / 辰山社区 / 辰山社区第一片区" in liaison.text
    assert liaison.delivery_id == delivery_id("m-1", "liaison:lighting:450305001", ChannelName.wecom)
    assert "19907737140" not in liaison.model_dump_json()  # no phone numbers in queues


def test_urgent_dispatch_also_reaches_the_community_commanders(planner: Planner) -> None:
    out = planner.plan(dispatched("urgent"))
    commanders = {d.recipient for d in out if d.recipient.startswith("commander:")}
    assert commanders == {"commander:4:qx-l4-001001-liguodong", "commander:4:qx-l4-001001-zhouhuimin"}
    assert all(d.urgent for d in out)


DISTRICT = {
    "commander:2:qx-l2-huanghaibo",
    "commander:2:qx-l2-tangliping",
    "commander:2:qx-l2-qinzhenhua",
    "commander:2:qx-l2-liaoyonghong",
}


def at_level(level: int, dept: str, route: str, by: str = "", grid: str = GRID) -> CaseDispatched:
    event = dispatched()
    event.case.grid = grid
    event.assignments = [
        Assignment(dept=dept, street="450305001", level=level, route=route, order_id="o-2", dispatched_at=NOW)
    ]
    event.by = by
    return event


@pytest.mark.parametrize(
    ("route", "by", "grid", "subject"),
    [
        ("hand_up", "station:450305001:k1", GRID, "【上交区级】"),
        ("manual", "ops:k2", GRID, "【区级接管】"),
        ("district_triage", "", "450305", "【区级分拨】"),
    ],
)
def test_a_case_at_the_district_reaches_the_district_commanders(
    planner: Planner, route: str, by: str, grid: str, subject: str
) -> None:
    dept = "cityman" if route == "manual" else "station"
    out = planner.plan(at_level(2, dept, route, by, grid))
    commanders = [d for d in out if d.recipient.startswith("commander:")]
    assert {d.recipient for d in commanders} == DISTRICT
    assert all(d.channel is ChannelName.dingtalk and d.fallbacks == [ChannelName.sms] for d in commanders)
    assert commanders[0].subject.startswith(subject), commanders[0].subject
    if route != "manual":
        assert "区级指挥中心" in commanders[0].text


def test_a_dispatch_at_the_street_does_not_reach_the_district(planner: Planner) -> None:
    out = planner.plan(at_level(3, "cityman", "manual", "station:450305001:k1"))
    assert not [d for d in out if d.recipient.startswith("commander:")]


def test_a_withdrawn_order_reaches_the_relieved_liaison_and_webhook(planner: Planner) -> None:
    event = DispatchWithdrawn(
        message_id="withdrawn:o-1",
        case_id="450305-20261127-000001",
        correlation_id="r-1",
        order_id="450305-20261127-000001/1/lighting",
        dept="lighting",
        street="450305001",
        level=3,
        round_no=2,
        by="ops:k2",
        note="改派: 属供电线路故障",
        case=summary(),
    )
    out = planner.plan(event, CaseFacts(case=case()))
    assert pairs(out) == {("liaison:lighting:450305001", "wecom"), ("dept:lighting", "webhook")}
    liaison = next(d for d in out if d.channel is ChannelName.wecom)
    assert liaison.subject == "【撤回】450305-20261127-000001 路灯（01037） 派遣已撤回"
    assert "已撤回" in liaison.text and "请停止处置" in liaison.text and "属供电线路故障" in liaison.text
    assert "期限" not in liaison.text  # not the new round's deadlines
    assert liaison.fallbacks == [ChannelName.sms]


def test_same_event_twice_plans_the_same_delivery_ids(planner: Planner) -> None:
    assert [d.delivery_id for d in planner.plan(dispatched())] == [d.delivery_id for d in planner.plan(dispatched())]
    assert {d.delivery_id for d in planner.plan(dispatched(message_id="m-2"))}.isdisjoint(
        {d.delivery_id for d in planner.plan(dispatched())}
    )


def test_breach_is_urgent_with_sms_and_commanders_of_the_cell(planner: Planner) -> None:
    event = DeadlineBreached(
        case_id="450305-20261127-000001",
        correlation_id="r-1",
        dept="lighting",
        street="450305001",
        level=3,
        order_id="o-1",
        deadline="handle",
        due_at=NOW,
        late_seconds=5400,
    )
    out = planner.plan(event, CaseFacts(case=case()))
    assert ("liaison:lighting:450305001", "sms") in pairs(out)
    assert ("commander:4:qx-l4-001001-liguodong", "dingtalk") in pairs(out)
    assert all(d.urgent for d in out)
    sms = next(d for d in out if d.channel is ChannelName.sms)
    assert sms.sms_template == "SMS_465320003"
    assert sms.sms_params == {
        "case_id": "450305-20261127-000001",
        "category": "路灯",
        "place": "辰山社区",
        "deadline": "11-27 10:00",
    }
    assert sms.subject.startswith("【已超时】450305-20261127-000001 处置超时 1小时30分")


def test_escalation_goes_to_the_commanders_of_the_new_level_and_the_operations_centre(planner: Planner) -> None:
    event = CaseEscalated(
        case_id="450305-20261127-000001", correlation_id="r-1", from_level=3, to_level=2, dept="lighting", reason="超时"
    )
    out = planner.plan(event, CaseFacts(case=case()))
    assert {r for r, _ in pairs(out) if r.startswith("commander:2:")} == {
        "commander:2:qx-l2-huanghaibo",
        "commander:2:qx-l2-tangliping",
        "commander:2:qx-l2-qinzhenhua",
        "commander:2:qx-l2-liaoyonghong",
    }
    assert ("ops", "webhook") in pairs(out)
    assert next(d for d in out if d.recipient == "ops").fallbacks == [ChannelName.email]


@pytest.mark.parametrize(
    ("status", "told"),
    [("resolved", True), ("closed", True), ("reopened", True), ("acknowledged", False), ("in_progress", False)],
)
def test_reporter_hears_only_resolved_closed_reopened(planner: Planner, status: str, told: bool) -> None:
    event = CaseUpdated(
        case_id="450305-20261127-000001",
        correlation_id="r-1",
        from_status=None,
        to_status=CaseStatus(status),
        actor="x",
        dept="lighting",
    )
    out = planner.plan(event, CaseFacts(case=case()))
    assert (("reporter:w-1", "webhook") in pairs(out)) is told


def test_duplicates_reporters_get_the_original_s_update(planner: Planner) -> None:
    event = CaseUpdated(
        case_id="450305-20261127-000001", correlation_id="r-1", from_status=None, to_status=CaseStatus.closed, actor="x"
    )
    facts = CaseFacts(
        case=case("w-1", ["450305-20261127-000009"]),
        duplicate_reporters={"w-9": "450305-20261127-000009", "w-1": "450305-20261127-000010"},
    )
    out = [d for d in planner.plan(event, facts) if d.recipient.startswith("reporter:")]
    assert {(d.recipient, d.payload["reporter_case_id"]) for d in out} == {
        ("reporter:w-1", "450305-20261127-000001"),
        ("reporter:w-9", "450305-20261127-000009"),
    }


def test_addresses_are_looked_up_at_send_time(planner: Planner) -> None:
    book = planner.addresses
    assert book.resolve("liaison:lighting:450305001", ChannelName.sms).to == "19907737140"
    assert book.resolve("dept:lighting", ChannelName.webhook).to == "http://sink/lighting"
    assert book.resolve("dept:station", ChannelName.email).to == "station-duty@example.gov.cn"
    assert book.resolve("reporter:w-1", ChannelName.webhook).to == "http://app/hook"
    assert book.resolve("liaison:lighting:450305999", ChannelName.sms) is None
    assert book.resolve("liaison:lighting:450305001", ChannelName.wecom) is None  # robot URL env unset


# ------------------------------------------------------------------ retries


def _delivery(attempt: int) -> Delivery:
    return Delivery(
        delivery_id="d",
        event="case_dispatched",
        case_id="c",
        correlation_id="r",
        recipient="dept:gas",
        channel=ChannelName.webhook,
        subject="s",
        text="t",
        payload={},
        attempt=attempt,
    )


@pytest.mark.parametrize(("attempt", "delay"), [(1, 10), (2, 60), (3, 300), (4, 1800)])
def test_transient_failures_follow_the_schedule(attempt: int, delay: int) -> None:
    step = next_step(_delivery(attempt), DeliveryOutcome.retry("HTTP 503", 503))
    assert (step.action, step.delay_s) == ("retry", delay)


def test_fifth_attempt_is_the_last() -> None:
    step = next_step(_delivery(5), DeliveryOutcome.retry("HTTP 503", 503))
    assert (step.action, step.kind) == ("dead", "exhausted") and "5 attempts" in step.reason


@pytest.mark.parametrize(
    ("attempt", "retry_after", "delay"), [(1, 8, 10), (1, 30, 60), (1, 61, 300), (1, 7200, 1800), (3, 5, 300)]
)
def test_retry_after_is_honoured_never_shortening_the_schedule(attempt: int, retry_after: float, delay: int) -> None:
    step = next_step(_delivery(attempt), DeliveryOutcome.retry("HTTP 429", 429, retry_after))
    assert step.delay_s == delay


def test_permanent_failure_is_dead_at_once() -> None:
    step = next_step(_delivery(1), DeliveryOutcome.fail("HTTP 410 Gone", 410))
    assert (step.action, step.kind) == ("dead", "permanent") and "410" in step.reason


# ------------------------------------------------------------------ quiet hours


@pytest.mark.parametrize(
    ("start", "end", "local", "release"),
    [
        ("22:00", "07:30", "23:15", "2026-11-28 07:30"),
        ("22:00", "07:30", "03:00", "2026-11-27 07:30"),
        ("22:00", "07:30", "07:30", None),
        ("22:00", "07:30", "12:00", None),
        ("12:00", "14:00", "13:59", "2026-11-27 14:00"),
        ("12:00", "14:00", "14:00", None),
    ],
)
def test_quiet_hours_release(start: str, end: str, local: str, release: str | None) -> None:
    now = datetime.fromisoformat(f"2026-11-27 {local}").replace(tzinfo=TZ)
    got = QuietHours(start=start, end=end).release_at(now)
    assert (got.strftime("%Y-%m-%d %H:%M") if got else None) == release


def test_notification_failed_text_can_be_overridden(tmp_path: Path, planner: Planner) -> None:
    (tmp_path / "notification_failed.webhook.j2").write_text("【失败】{{ case_id }}\n\n{{ recipient }} {{ reason }}\n")
    custom = Planner(
        planner.notify, planner.addresses, Renderer(tmp_path, public_base_url="x", timezone="Asia/Shanghai")
    )
    ctx = {"case_id": "c-1", "recipient": "dept:gas", "reason": "HTTP 410", "channel": "webhook", "attempts": 1}
    assert custom.render("notification_failed", ChannelName.webhook, "ops", ctx)[:2] == (
        "【失败】c-1",
        "dept:gas HTTP 410",
    )
    assert (
        planner.render("notification_failed", ChannelName.email, "ops", ctx)[0] == "【通知失败】c-1 webhook → dept:gas"
    )


def test_every_status_notify_yaml_subscribes_is_bound_to_the_notifier() -> None:
    """The bindings come from the statuses the subscriptions may name: config/notify.yaml's
    case_updated subscriptions all land in that set, and the set is what is bound."""
    bound = {
        b.routing_key
        for b in topology.build_topology([]).bindings
        if b.queue == topology.Q_NOTIFIER_EVENTS and b.routing_key.startswith(topology.RK_CASE_UPDATED)
    }
    assert bound == {topology.case_updated_routing_key(s) for s in NOTIFIED_STATUSES}
    used = {s for sub in load_notify().subscriptions if sub.event == "case_updated" for s in sub.when.to_status or []}
    assert used and {topology.case_updated_routing_key(s) for s in used} <= bound

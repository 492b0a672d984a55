"""Notification templates: every event × channel renders, in Chinese, in local time."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from services.notifier.channels import ChannelName
from services.notifier.render import EVENTS, Renderer, context_from_event
from shared.models import Assignment, CaseDispatched, CaseSummary, Severity

CASE_ID = "450305-20261127-000123"
CONTEXT = {
    "case_id": CASE_ID,
    "category": "01037",
    "category_name": "路灯",
    "street": "450305003",
    "street_name": "穿山街道",
    "community_name": "辰山社区",
    "patch_name": "辰山社区第3网格",
    "address": "七星区穿山路12号",
    "description": "连续三盏路灯不亮",
    "dept": "lighting",
    "dept_name": "照明管理处",
    "deadline": "2026-11-27T05:30:00+00:00",  # 13:30 in Guilin
    "deadline_kind": "handle",
    "ack_due": datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc),
    "handle_due": datetime(2026, 11, 27, 5, 30, tzinfo=timezone.utc),
    "late_seconds": 5400,
    "from_level": 5,
    "to_level": 4,
    "reason": "无匹配路由",
    "from_status": "in_progress",
    "to_status": "resolved",
    "mode": "service",
    "items": [
        {"case_id": CASE_ID, "subject": "【派遣】路灯"},
        {"case_id": "450305-20261127-000124", "subject": "【派遣】井盖"},
    ],
}


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(public_base_url="https://gridbus.example.cn/", timezone="Asia/Shanghai")


@pytest.mark.parametrize("channel", list(ChannelName))
@pytest.mark.parametrize("event", EVENTS)
def test_every_event_and_channel_renders(renderer: Renderer, event: str, channel: ChannelName) -> None:
    subject, text = renderer.render(event, channel, CONTEXT)
    assert subject and "\n" not in subject
    assert text
    for leftover in ("None", "Undefined", "{{", "{%"):
        assert leftover not in subject + text
    if event != "digest":
        assert CASE_ID in subject
        assert f"https://gridbus.example.cn/v1/cases/{CASE_ID}" in text


@pytest.mark.parametrize("channel", [ChannelName.wecom, ChannelName.dingtalk, ChannelName.email])
def test_dispatch_message_names_case_place_deadline_and_expectation(renderer: Renderer, channel: ChannelName) -> None:
    subject, text = renderer.render("case_dispatched", channel, CONTEXT)
    assert subject == f"【派遣】{CASE_ID} 路灯（01037）"
    assert "穿山街道 / 辰山社区 / 辰山社区第3网格 · 七星区穿山路12号" in text
    assert "处置期限：2026-11-27 13:30（周五）" in text  # UTC 05:30 shown in Asia/Shanghai
    assert "请在签收期限前签收" in text


def test_local_time_without_time_zone_is_taken_as_local(renderer: Renderer) -> None:
    assert renderer.local_time("2026-10-01T08:00:00") == "2026-10-01 08:00（周四）"
    assert renderer.local_time(datetime(2026, 12, 31, 16, 0, tzinfo=timezone.utc)) == "2027-01-01 00:00（周五）"


def test_case_updated_wording_follows_the_new_status(renderer: Renderer) -> None:
    reopened = renderer.render("case_updated", ChannelName.email, {**CONTEXT, "to_status": "reopened"})
    closed = renderer.render("case_updated", ChannelName.email, {**CONTEXT, "to_status": "closed"})
    assert reopened[0].startswith("【核查未通过，已重新派遣】") and "返工" in reopened[1]
    assert closed[0].startswith("【已结案】")


def test_breach_and_digest_details(renderer: Renderer) -> None:
    subject, text = renderer.render("deadline_breached", ChannelName.wecom, CONTEXT)
    assert subject == f"【已超时】{CASE_ID} 处置超时 1小时30分"
    assert '<font color="warning">' in text
    subject, text = renderer.render("digest", ChannelName.dingtalk, CONTEXT)
    assert subject == "【汇总】2 条案件通知"
    assert "- [【派遣】井盖](https://gridbus.example.cn/v1/cases/450305-20261127-000124)" in text


def test_robot_text_cannot_mention_or_restyle(renderer: Renderer) -> None:
    hostile = {**CONTEXT, "description": "快来 <@all> @所有人\n# 标题"}
    for channel in (ChannelName.wecom, ChannelName.dingtalk):
        _, text = renderer.render("case_dispatched", channel, hostile)
        assert "<@all>" not in text and "@所有人" not in text
        assert "\n# 标题" not in text
    _, text = renderer.render("case_dispatched", ChannelName.email, hostile)
    assert "<@all>" in text  # plain text e-mail shows what the citizen wrote


def test_missing_optional_keys_render_cleanly(renderer: Renderer) -> None:
    subject, text = renderer.render("case_dispatched", ChannelName.dingtalk, {"case_id": CASE_ID})
    assert subject == f"【派遣】{CASE_ID} 未分类"
    assert "None" not in text and "> 签收期限" not in text and "> 处置期限" not in text


def test_override_directory_wins_and_may_reuse_builtins(tmp_path: Path) -> None:
    (tmp_path / "case_dispatched.sms.j2").write_text(
        '{% import "_facts.j2" as f with context %}派单 {{ case_id }}\n\n'
        "{{ case_id }} 请速签收，期限 {{ deadline | local }}\n",
        encoding="utf-8",
    )
    renderer = Renderer(tmp_path, public_base_url="http://x", timezone="Asia/Shanghai")
    assert renderer.render("case_dispatched", ChannelName.sms, CONTEXT) == (
        f"派单 {CASE_ID}",
        f"{CASE_ID} 请速签收，期限 2026-11-27 13:30（周五）",
    )
    # Other pairs still come from the built-in set.
    assert renderer.render("case_dispatched", ChannelName.email, CONTEXT)[0].startswith("【派遣】")


def test_unknown_event_is_a_lookup_error(renderer: Renderer) -> None:
    with pytest.raises(LookupError):
        renderer.render("case_teleported", ChannelName.email, CONTEXT)


def test_context_from_a_real_event(renderer: Renderer) -> None:
    now = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)
    event = CaseDispatched(
        case_id=CASE_ID,
        correlation_id="r-1",
        case=CaseSummary(
            category="01037",
            severity=Severity.urgent,
            grid="450305003001001",
            street="450305003",
            address="七星区穿山路12号",
            registered_at=now,
        ),
        assignments=[
            Assignment(
                dept="lighting",
                street="450305003",
                level=5,
                order_id="o-1",
                dispatched_at=now,
                ack_due=datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc),
                handle_due=datetime(2026, 11, 27, 5, 30, tzinfo=timezone.utc),
            ),
        ],
    )
    context = context_from_event(event.model_dump(mode="json"))
    assert context["dept"] == "lighting" and context["severity"] == "urgent"
    subject, text = renderer.render("case_dispatched", ChannelName.email, context)
    assert subject == f"【紧急】【派遣】{CASE_ID} 01037"
    assert "签收期限：2026-11-27 10:00（周五）；处置期限：2026-11-27 13:30（周五）" in text
    assert renderer.sms_params(context) == {
        "case_id": CASE_ID,
        "category": "01037",
        "place": "七星区穿山路12号",
        "deadline": "11-27 13:30",
    }

"""The notifier service as a real process on the real RabbitMQ and Redis, delivering to
real local servers: a signed-webhook receiver (departments, grid app, operations centre),
WeCom and DingTalk robots that check the message shape and signature, an SMS provider
that enforces approved templates, and an SMTP server (aiosmtpd).

Events are published to `gridbus.events` as the other services would; cases that the
notifier looks up are stored in Redis the way intake stores them. Waits are generous;
the only time assertions are lower bounds the delay queues guarantee.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest
import redis
from aiosmtpd.controller import Controller

from services.notifier import signing
from shared.amqpclient import AMQPError, ConfirmChannel, body_bytes, connection, props, queue_info
from shared.models import (
    Assignment,
    Case,
    CaseDispatched,
    CaseEscalated,
    CaseStatus,
    CaseSummary,
    CaseUpdated,
    DeadlineBreached,
    Envelope,
    Location,
    ReporterRole,
    Severity,
)
from shared.topology import event_routing_key
from tests.conftest import Vhosts, copy_config, free_port, wait_for
from tests.integration.test_channels import (
    DING_SECRET,
    DING_TOKEN,
    SMS_KEY,
    SMS_TEMPLATES,
    WECOM_KEY,
    MailSink,
    dingtalk_robot,
    sms_provider,
    wecom_robot,
)
from tests.localhttp import LocalHTTP, Reply, Request, json_reply

pytestmark = pytest.mark.integration

SECRET = "notifier-it-secret"
GRID = "450305001001001"  # 辰山社区第一片区, street 450305001
STREET = "450305001"
TZ = ZoneInfo("Asia/Shanghai")
QUIET_RECIPIENT = "liaison:water:450305001"
for template in ("SMS_T_DISPATCHED", "SMS_T_BREACHED", "SMS_T_UNROUTABLE", "SMS_T_DIGEST", "SMS_T_FAILED"):
    SMS_TEMPLATES[template] = {"case_id", "category", "place", "deadline"}


# --------------------------------------------------------------------------- the webhook receiver


class Hooks:
    """Signed-webhook receiver (docs/webhooks.md) whose answers a test scripts per case id:
    an int status, `("retry_after", status, seconds)`, or `"hang"` (never answers until
    released, like a receiver that got the request while the sender died)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.scripts: dict[str, list[Any]] = {}
        self.release = threading.Event()
        outer = self

        def respond(request: Request) -> Reply:
            ok = signing.verify(SECRET, request.headers, request.body)
            body = request.json()
            case_id = body["event"].get("case_id", "")
            outer.received.append(
                {
                    "at": time.time(),
                    "path": request.path,
                    "valid": ok,
                    "delivery": request.headers.get("X-Gridbus-Delivery"),
                    "body": body,
                }
            )
            if not ok:
                return json_reply({"error": "bad signature"}, 401)
            script = outer.scripts.get(case_id)
            action = script.pop(0) if script else 204
            if action == "hang":
                outer.release.wait(60)
                return json_reply({}, 204)
            if isinstance(action, tuple):
                _, status, seconds = action
                return json_reply({"error": "slow down"}, status, {"Retry-After": str(seconds)})
            return json_reply({} if action < 400 else {"error": "no"}, action)

        self.http = LocalHTTP(respond).start()

    def for_case(self, case_id: str, path_prefix: str = "") -> list[dict[str, Any]]:
        return [
            r
            for r in self.received
            if r["body"]["event"].get("case_id") == case_id and r["path"].startswith(path_prefix)
        ]


# --------------------------------------------------------------------------- the stack


def notify_yaml(quiet_end: datetime) -> str:
    start = (quiet_end - timedelta(hours=1)).astimezone(TZ).strftime("%H:%M:%S")
    end = quiet_end.astimezone(TZ).strftime("%H:%M:%S")
    return f"""
operations_centre:
  name: 指挥中心
  webhook: ${{TEST_OPS_WEBHOOK}}
  email: ops@qixing.example.cn
robots:
  wecom:
    - {{scope: "dept:station", url: "${{TEST_WECOM_BAD_URL}}"}}
    - {{scope: "*", url: "${{TEST_WECOM_URL}}"}}
  dingtalk:
    - {{scope: "commanders", url: "${{TEST_DING_URL}}", secret: "${{TEST_DING_SECRET}}"}}
sms_templates:
  case_dispatched: SMS_T_DISPATCHED
  deadline_breached: SMS_T_BREACHED
  case_unroutable: SMS_T_UNROUTABLE
  notification_failed: SMS_T_FAILED
  digest: SMS_T_DIGEST
quiet_hours:
  recipients:
    "{QUIET_RECIPIENT}": {{start: "{start}", end: "{end}"}}
subscriptions:
  - event: case_dispatched
    notify:
      - {{to: liaison, channels: [wecom, sms]}}
      - {{to: department, channels: [webhook]}}
  - event: deadline_breached
    notify:
      - {{to: liaison, channels: [sms]}}
      - {{to: commanders, level: 4, channels: [dingtalk]}}
  - event: case_escalated
    notify:
      - {{to: operations_centre, channels: [email]}}
  - event: case_updated
    when: {{to_status: [resolved, closed, reopened]}}
    notify:
      - {{to: reporter, channels: [webhook]}}
  - event: case_unroutable
    notify:
      - {{to: liaison, dept: station, channels: [wecom, sms]}}
  - event: notification_failed
    notify:
      - {{to: operations_centre, channels: [webhook]}}
"""


class Stack:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.log_file = open(log_path, "a")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.serve", "notifier"],
            env={**os.environ, **self.env},
            stdout=self.log_file,
            stderr=self.log_file,
        )

        def consuming() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:  # a busy broker times out the handshake: try again
                with connection(self.env["AMQP_URI"]) as conn:
                    infos = [queue_info(conn, q) for q in ("notifier.events", "notifier.deliveries")]
            except (OSError, AMQPError):
                return False
            return all(info is not None and info[1] > 0 for info in infos)

        assert wait_for(consuming, 90, 0.3), "notifier did not start consuming"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(25)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextmanager
def notifier_stack(
    vhost_factory: Vhosts,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    tag: str,
    notify_yaml: str,
    hooks: Hooks,
    env: dict[str, str],
) -> Iterator[dict[str, Any]]:
    """The notifier process on a vhost and Redis key prefix of its own, with `notify.yaml`,
    delivering to `hooks` (and whatever else `env` points it at); a publisher with
    confirms for the test. The tests of disabled channels run it too."""
    vhost = vhost_factory.make(tag)
    config_dir = copy_config(tmp_path_factory.mktemp(f"{tag}-config"))
    (config_dir / "notify.yaml").write_text(notify_yaml, encoding="utf-8")
    prefix = f"{tag[:3]}{uuid.uuid4().hex[:8]}"
    env = {
        "AMQP_URI": vhost,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "CONFIG_DIR": str(config_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "NOTIFIER_METRICS_PORT": str(free_port()),
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_URL_TEMPLATE": f"{hooks.http.base}/hooks/{{dept}}",
        "TEST_OPS_WEBHOOK": f"{hooks.http.base}/ops",
        **env,
    }
    notifier = Stack(env, config_dir / "notifier.log")
    notifier.start()
    publisher = ConfirmChannel(vhost)
    publisher.open()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield {
            "env": env,
            "hooks": hooks,
            "channel": publisher,
            "redis": r,
            "prefix": prefix,
            "notifier": notifier,
            "log": notifier.log_path,
        }
    finally:
        hooks.release.set()
        notifier.stop()
        print(notifier.log_path.read_text()[-6000:])
        publisher.close()
        hooks.http.stop()
        keys = list(r.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
        vhost_factory.drop(vhost)


@pytest.fixture(scope="module")
def stack(vhost_factory: Vhosts, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    quiet_end = datetime.now(timezone.utc) + timedelta(seconds=45)
    hooks = Hooks()
    wecom, ding, sms = (LocalHTTP(r).start() for r in (wecom_robot, dingtalk_robot, sms_provider))
    mail, mail_port = MailSink(), free_port()
    smtp = Controller(mail, hostname="127.0.0.1", port=mail_port)
    smtp.start()
    env = {
        "GRID_APP_WEBHOOK_URL": f"{hooks.http.base}/gridapp",
        "TEST_WECOM_URL": f"{wecom.base}/cgi-bin/webhook/send?key={WECOM_KEY}",
        "TEST_WECOM_BAD_URL": f"{wecom.base}/cgi-bin/webhook/send?key=revoked",
        "TEST_DING_URL": f"{ding.base}/robot/send?access_token={DING_TOKEN}",
        "TEST_DING_SECRET": DING_SECRET,
        "GRIDBUS_SMS_URL": f"{sms.base}/v1/sms/send",
        "GRIDBUS_SMS_API_KEY": SMS_KEY,
        "GRIDBUS_SMTP_HOST": "127.0.0.1",
        "GRIDBUS_SMTP_PORT": str(mail_port),
        "GRIDBUS_MAIL_FROM": "notify@gridbus.qixing.example.cn",
        "NOTIFIER_SEND_LEASE_SECONDS": "3",
        "NOTIFIER_FLUSH_SECONDS": "0.5",
        "NOTIFIER_QUEUE_POLL_SECONDS": "1",
    }
    try:
        with notifier_stack(
            vhost_factory, redis_url, tmp_path_factory, "notifier", notify_yaml(quiet_end), hooks, env
        ) as running:
            yield {**running, "wecom": wecom, "ding": ding, "sms": sms, "mail": mail, "quiet_end": quiet_end}
    finally:
        for server in (wecom, ding, sms):
            server.stop()
        smtp.stop()


# --------------------------------------------------------------------------- helpers


def new_case_id() -> str:
    return f"450305-20261127-{uuid.uuid4().int % 10**6:06d}"


def summary(severity: str = "normal") -> CaseSummary:
    return CaseSummary(
        category="01037",
        severity=Severity(severity),
        grid=GRID,
        street=STREET,
        address="七星区辰山路8号",
        description="连续三盏路灯不亮",
        registered_at=datetime.now(timezone.utc),
    )


def dispatched(case_id: str, dept: str = "lighting", **kw: Any) -> CaseDispatched:
    now = datetime.now(timezone.utc)
    return CaseDispatched(
        case_id=case_id,
        correlation_id=f"r-{case_id}",
        case=summary(),
        assignments=[
            Assignment(
                dept=dept,
                street=STREET,
                level=3,
                order_id=f"o-{case_id}",
                dispatched_at=now,
                ack_due=now + timedelta(hours=2),
                handle_due=now + timedelta(hours=24),
            )
        ],
        **kw,
    )


def resolved(case_id: str) -> CaseUpdated:
    """The lighting department resolved the case (the reporters are told)."""
    return CaseUpdated(
        case_id=case_id,
        correlation_id=f"r-{case_id}",
        from_status=CaseStatus.in_progress,
        to_status=CaseStatus.resolved,
        actor="dept:lighting",
        dept="lighting",
        mode="service",
    )


def breached(case_id: str, due_at: datetime, **kw: Any) -> DeadlineBreached:
    """The lighting department's acknowledge deadline of `dispatched(case_id)` missed."""
    return DeadlineBreached(
        case_id=case_id,
        correlation_id=f"r-{case_id}",
        dept="lighting",
        street=STREET,
        level=3,
        order_id=f"o-{case_id}",
        deadline="acknowledge",
        due_at=due_at,
        **kw,
    )


def store_case(
    stack: dict[str, Any], case_id: str, reporter: str = "w-1024", duplicates: list[str] = (), dept: str = "lighting"
) -> Case:
    now = datetime.now(timezone.utc)
    case = Case(
        case_id=case_id,
        report_id=f"rep-{case_id}",
        correlation_id=f"r-{case_id}",
        status=CaseStatus.dispatched,
        category="01037",
        severity=Severity.normal,
        description="连续三盏路灯不亮",
        location=Location(lat=25.28, lon=110.312, address="七星区辰山路8号", grid=GRID),
        grid=GRID,
        street=STREET,
        reporter_id=reporter,
        reporter_role=ReporterRole.grid_officer,
        observed_at=now,
        registered_at=now,
        updated_at=now,
        duplicates=list(duplicates),
        assignments=[
            Assignment(
                dept=dept,
                street=STREET,
                level=3,
                order_id=f"o-{case_id}",
                dispatched_at=now,
                handle_due=now + timedelta(hours=24),
            )
        ],
    )
    stack["redis"].hset(f"{stack['prefix']}:case:{case_id}", mapping={"doc": case.model_dump_json(), "version": 1})
    return case


def publish(stack: dict[str, Any], event: Envelope) -> None:
    stack["channel"].publish_one(
        "gridbus.events",
        event_routing_key(event),
        event.model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=2,
        message_id=event.message_id,
    )


def log_events(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """The notifier's JSON log lines so far."""
    out = []
    for line in Path(stack["log"]).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def logged(stack: dict[str, Any], event: str, case_id: str, channel: str | None = None) -> list[dict[str, Any]]:
    """Log lines `event` of the notifier about `case_id` (on `channel`): what it has finished
    doing, to wait on instead of a fixed sleep."""
    return [
        e
        for e in log_events(stack)
        if e.get("event") == event and e.get("case_id") == case_id and channel in (None, e.get("channel"))
    ]


def nothing_held(stack: dict[str, Any]) -> bool:
    """No held message is waiting for a digest (or being digested): no digest can follow."""
    r, prefix = stack["redis"], stack["prefix"]
    return not (r.zcard(f"{prefix}:notify:release") or r.zcard(f"{prefix}:notify:release_leased"))


def robot_texts(server: LocalHTTP) -> list[str]:
    return [json.dumps(r.json(), ensure_ascii=False) for r in server.received]


# ------------------------------------------------------------ tests (quiet hours first: its window is set at start)


def test_quiet_hours_hold_messages_and_send_one_digest_when_they_end(stack: dict[str, Any]) -> None:
    assert datetime.now(timezone.utc) < stack["quiet_end"] - timedelta(seconds=10), "stack started too slowly"
    first, second = new_case_id(), new_case_id()
    for case_id in (first, second):
        publish(stack, dispatched(case_id, dept="water"))
    hooks: Hooks = stack["hooks"]
    # the department's webhook is a machine: never held
    assert wait_for(lambda: hooks.for_case(first, "/hooks/water") and hooks.for_case(second, "/hooks/water"), 20)
    assert not [t for t in robot_texts(stack["wecom"]) if first in t or second in t], "sent during quiet hours"

    def digest() -> list[str]:
        return [t for t in robot_texts(stack["wecom"]) if first in t and second in t]

    got = wait_for(digest, (stack["quiet_end"] - datetime.now(timezone.utc)).total_seconds() + 20)
    assert got, "no digest after the quiet hours ended"
    assert time.time() >= stack["quiet_end"].timestamp() - 1
    assert len(got) == 1 and "【汇总】2 条案件通知" in got[0] and "<@qx-water-001>" in got[0]
    assert wait_for(lambda: nothing_held(stack), 10), "messages still held after the digest"
    assert len([t for t in robot_texts(stack["wecom"]) if first in t or second in t]) == 1


def test_each_channel_delivers_through_the_notifier(stack: dict[str, Any]) -> None:
    hooks: Hooks = stack["hooks"]
    case_id, dup_id = new_case_id(), new_case_id()
    store_case(stack, case_id, reporter="w-1024", duplicates=[dup_id])
    store_case(stack, dup_id, reporter="w-2048")
    publish(stack, dispatched(case_id))

    # webhook to the department, signed
    hook = wait_for(lambda: hooks.for_case(case_id, "/hooks/lighting"), 20)
    assert hook and hook[0]["valid"] and hook[0]["body"]["event"]["event"] == "case_dispatched"
    assert hook[0]["delivery"] == hook[0]["body"]["delivery_id"]
    # WeCom robot: markdown naming the case, @ the lighting liaison of the street
    wecom = wait_for(
        lambda: [r.json() for r in stack["wecom"].received if case_id in json.dumps(r.json(), ensure_ascii=False)], 20
    )
    assert wecom and wecom[0]["msgtype"] == "markdown"
    assert "<@qx-lighting-001>" in wecom[0]["markdown"]["content"]
    assert "辰山社区" in wecom[0]["markdown"]["content"] and "投递编号" in wecom[0]["markdown"]["content"]

    # breach: SMS to the liaison (template + params), DingTalk (加签) @ the community commanders
    now = datetime.now(timezone.utc)
    publish(stack, breached(case_id, now - timedelta(minutes=30), late_seconds=1800))
    sms = wait_for(lambda: [r.json() for r in stack["sms"].received if r.json()["params"]["case_id"] == case_id], 20)
    assert sms and sms[0]["phone"] == "19907737140" and sms[0]["template_id"] == "SMS_T_BREACHED"
    assert sms[0]["params"]["place"] == "辰山社区" and len(sms[0]["out_id"]) == 32

    def ding_for_case() -> list[dict[str, Any]]:
        return [r.json() for r in stack["ding"].received if case_id in json.dumps(r.json(), ensure_ascii=False)]

    assert wait_for(lambda: len(ding_for_case()) >= 2, 20)
    ding = ding_for_case()
    assert len(ding) == 2  # the two level-4 commanders of 辰山社区, one message each
    assert {tuple(d["at"]["atMobiles"]) for d in ding} == {("19907731101",), ("19907731102",)}
    assert ding[0]["markdown"]["title"].startswith(f"【已超时】{case_id}")

    # escalation: e-mail to the operations centre
    publish(
        stack,
        CaseEscalated(
            case_id=case_id, correlation_id=f"r-{case_id}", from_level=3, to_level=2, dept="lighting", reason="签收超时"
        ),
    )
    mail = wait_for(lambda: [m for _, _, m in stack["mail"].messages if case_id in str(m["Subject"])], 20)
    assert mail and mail[0]["Subject"].startswith(f"【升级】{case_id}") and mail[0]["X-Gridbus-Delivery"]
    assert mail[0]["To"] == "ops@qixing.example.cn"

    # resolved: the reporter, and the duplicate's reporter, through the grid app webhook
    publish(stack, resolved(case_id))
    app = wait_for(lambda: len(hooks.for_case(case_id, "/gridapp")) >= 2 and hooks.for_case(case_id, "/gridapp"), 20)
    assert app and {(h["body"]["event"]["reporter_id"], h["body"]["event"]["reporter_case_id"]) for h in app} == {
        ("w-1024", case_id),
        ("w-2048", dup_id),
    }
    assert all(h["valid"] and h["body"]["event"]["to_status"] == "resolved" for h in app)


def _messages_out(stack: dict[str, Any], exchange: str, kind: str) -> float:
    """The notifier's gridbus_messages_out_total for one exchange and kind (0 before the first)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{stack['env']['NOTIFIER_METRICS_PORT']}/metrics", timeout=5).text
    want = f'exchange="{exchange}",kind="{kind}"'
    rows = [line for line in text.splitlines() if line.startswith("gridbus_messages_out_total{") and want in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in rows)


def test_an_event_is_delivered_in_process_without_the_deliveries_hop(stack: dict[str, Any]) -> None:
    """The liaison's WeCom message and the department's webhook go out from the worker that
    planned them: nothing is published to notifier.deliveries for them, and the archive's
    `notification_sent` records still are."""
    hooks: Hooks = stack["hooks"]
    case_id = new_case_id()
    before = _messages_out(stack, "gridbus.notify", "delivery")
    sent_before = _messages_out(stack, "gridbus.events", "notification_sent")
    publish(stack, dispatched(case_id, dept="drainage"))
    assert wait_for(
        lambda: logged(stack, "delivered", case_id, "webhook") and logged(stack, "delivered", case_id, "wecom"), 20
    )
    assert len(hooks.for_case(case_id, "/hooks/drainage")) == 1
    assert _messages_out(stack, "gridbus.notify", "delivery") == before
    assert _messages_out(stack, "gridbus.events", "notification_sent") >= sent_before + 2
    assert not stack["redis"].keys(f"{stack['prefix']}:notify:plan:*"), "a handled event's plan is left behind"


def test_killed_after_planning_the_recorded_plan_is_still_delivered(stack: dict[str, Any]) -> None:
    """The notifier dies while sending the first of an event's two deliveries, and the case
    changes before it is back: the event was not acked, so it comes back, and the plan
    recorded before the first send (not a new one from the changed case) is delivered —
    the interrupted one resent once with its delivery id, the other once — with the case's
    notification log and the archive's records; then the plan is gone."""
    from shared.audit import read_audit

    hooks: Hooks = stack["hooks"]
    notifier: Stack = stack["notifier"]
    r, prefix = stack["redis"], stack["prefix"]
    case_id, dup_id = new_case_id(), new_case_id()
    store_case(stack, case_id, reporter="w-5001", duplicates=[dup_id])
    store_case(stack, dup_id, reporter="w-5002")
    hooks.scripts[case_id] = ["hang"]  # the first of the two grid-app webhooks never answers
    event = resolved(case_id)
    publish(stack, event)
    assert wait_for(lambda: hooks.for_case(case_id, "/gridapp"), 30)
    plan_key = f"{prefix}:notify:plan:{event.message_id}"
    assert r.exists(plan_key), "the plan was not recorded before the first send"
    store_case(stack, case_id, reporter="w-5001", duplicates=[])  # planned again now, w-5002 would be left out
    notifier.kill()
    notifier.start()

    def reporters() -> list[str]:
        return sorted(h["body"]["event"]["reporter_id"] for h in hooks.for_case(case_id, "/gridapp"))

    assert wait_for(lambda: reporters() == ["w-5001", "w-5001", "w-5002"], 90), reporters()
    assert wait_for(lambda: len(logged(stack, "delivered", case_id, "webhook")) == 2, 30)
    assert wait_for(lambda: not r.exists(plan_key), 10), "the plan outlived its event"
    first = [
        h["delivery"] for h in hooks.for_case(case_id, "/gridapp") if h["body"]["event"]["reporter_id"] == "w-5001"
    ]
    assert len(set(first)) == 1, "the resend must carry the same delivery id"
    log = [json.loads(v) for v in r.hgetall(f"{prefix}:notify:case:{case_id}").values()]
    assert sorted((e["recipient"], e["outcome"]) for e in log) == [
        ("reporter:w-5001", "delivered"),
        ("reporter:w-5002", "delivered"),
    ]
    records = [
        e
        for e in read_audit(stack["env"]["AMQP_URI"], "first", case_id, idle_timeout=1.5)
        if e.get("event") == "notification_sent"
    ]
    assert sorted(e["recipient"] for e in records) == ["reporter:w-5001", "reporter:w-5002"]


def test_duplicate_event_gives_one_message_per_recipient_and_channel(stack: dict[str, Any]) -> None:
    case_id = new_case_id()
    event = dispatched(case_id, dept="gas")
    publish(stack, event)
    publish(stack, event)  # the same message id again: at-least-once upstream
    hooks: Hooks = stack["hooks"]
    assert wait_for(lambda: hooks.for_case(case_id, "/hooks/gas"), 20)
    assert wait_for(lambda: [t for t in robot_texts(stack["wecom"]) if case_id in t], 20)
    # the second copy's deliveries are dropped as done, at once or once a parked copy comes
    # back from the 10 s queue: wait for that, then nothing more can be sent
    assert wait_for(
        lambda: (
            logged(stack, "delivery_duplicate", case_id, "webhook")
            and logged(stack, "delivery_duplicate", case_id, "wecom")
        ),
        30,
    ), [e for e in log_events(stack) if e.get("case_id") == case_id]
    assert len(hooks.for_case(case_id, "/hooks/gas")) == 1
    assert len([t for t in robot_texts(stack["wecom"]) if case_id in t]) == 1


def test_503_then_success_and_429_retry_after_go_through_the_delay_queue(stack: dict[str, Any]) -> None:
    hooks: Hooks = stack["hooks"]
    busy, limited = new_case_id(), new_case_id()
    hooks.scripts[busy] = [503, 204]
    hooks.scripts[limited] = [("retry_after", 429, 8), 204]
    publish(stack, dispatched(busy, dept="cmcc"))
    publish(stack, dispatched(limited, dept="unicom"))
    both = wait_for(
        lambda: len(hooks.for_case(busy, "/hooks/")) >= 2 and len(hooks.for_case(limited, "/hooks/")) >= 2, 40
    )
    assert both, (hooks.for_case(busy), hooks.for_case(limited))
    for case_id, least in ((busy, 9.0), (limited, 8.0)):
        first, second = hooks.for_case(case_id, "/hooks/")[:2]
        assert first["delivery"] == second["delivery"], "a retry must carry the same delivery id"
        assert second["at"] - first["at"] >= least
    # recorded as delivered (the done marker written): no further retry can follow
    assert wait_for(
        lambda: logged(stack, "delivered", busy, "webhook") and logged(stack, "delivered", limited, "webhook"), 10
    )
    assert len(hooks.for_case(busy, "/hooks/")) == 2 and len(hooks.for_case(limited, "/hooks/")) == 2


def _dead_letters(stack: dict[str, Any], case_id: str) -> list[dict[str, Any]]:
    """Take this case's dead letters; leave the others (unacked until the end, then requeued)."""
    ch = stack["channel"].channel
    out, others = [], []
    while (msg := ch.basic_get("notifier.deliveries.dead", no_ack=False)) is not None:
        doc = json.loads(body_bytes(msg))
        if doc.get("case_id") == case_id:
            out.append({"doc": doc, "headers": props(msg)["headers"]})
            ch.basic_ack(msg.delivery_tag)
        else:
            others.append(msg.delivery_tag)
    for tag in others:
        ch.basic_reject(tag, requeue=True)
    return out


def test_permanent_failure_is_dead_lettered_and_the_operations_centre_told(stack: dict[str, Any]) -> None:
    hooks: Hooks = stack["hooks"]
    case_id = new_case_id()
    hooks.scripts[case_id] = [410]
    publish(stack, dispatched(case_id, dept="telecom"))
    ops = wait_for(
        lambda: [
            h for h in hooks.for_case(case_id, "/ops") if h["body"]["event"].get("event") == "notification_failed"
        ],
        20,
    )
    assert ops, "no notification_failed reached the operations centre"
    failed = ops[0]["body"]["event"]
    assert failed["recipient"] == "dept:telecom" and failed["channel"] == "webhook" and "410" in failed["reason"]
    dead: list[dict[str, Any]] = []
    wait_for(lambda: dead.extend(_dead_letters(stack, case_id)) or dead, 10)
    assert dead and "410" in dead[0]["headers"]["x-gridbus-reason"]
    assert dead[0]["headers"]["x-gridbus-error"] == "delivery_failed"
    assert len(hooks.for_case(case_id, "/hooks/telecom")) == 1  # 410 is not retried


def test_fallback_channel_after_permanent_failure(stack: dict[str, Any]) -> None:
    from shared.models import CaseUnroutable

    case_id = new_case_id()
    publish(stack, CaseUnroutable(case_id=case_id, correlation_id=f"r-{case_id}", case=summary(), reason="无匹配路由"))
    # the station's robot key was revoked (WeCom errcode 93000): the liaison gets an SMS instead
    sms = wait_for(lambda: [r.json() for r in stack["sms"].received if r.json()["params"]["case_id"] == case_id], 20)
    assert sms and sms[0]["phone"] == "19907737000" and sms[0]["template_id"] == "SMS_T_UNROUTABLE"
    assert [r for r in stack["wecom"].received if r.query.get("key") == ["revoked"]]


def test_crash_between_send_and_record_resends_once_with_the_same_delivery_id(stack: dict[str, Any]) -> None:
    hooks: Hooks = stack["hooks"]
    notifier: Stack = stack["notifier"]
    once, twice = new_case_id(), new_case_id()
    hooks.scripts[once] = ["hang", 204]
    publish(stack, dispatched(once, dept="power"))
    assert wait_for(lambda: hooks.for_case(once, "/hooks/power"), 60)
    notifier.kill()  # sent, answer never recorded
    notifier.start()
    resent = wait_for(lambda: len(hooks.for_case(once, "/hooks/power")) >= 2, 90)
    assert resent, "the delivery was not resent after the crash"
    first, second = hooks.for_case(once, "/hooks/power")[:2]
    assert first["delivery"] == second["delivery"]

    # dies again during the resend: no third send, dead letter with the reason instead
    hooks.scripts[twice] = ["hang", "hang", 204]
    publish(stack, dispatched(twice, dept="cable"))
    assert wait_for(lambda: hooks.for_case(twice, "/hooks/cable"), 60)
    notifier.kill()
    notifier.start()
    assert wait_for(lambda: len(hooks.for_case(twice, "/hooks/cable")) >= 2, 90)
    notifier.kill()
    notifier.start()
    dead: list[dict[str, Any]] = []
    assert wait_for(lambda: dead.extend(_dead_letters(stack, twice)) or dead, 90)
    assert "outcome unknown" in dead[0]["headers"]["x-gridbus-reason"]
    assert len(hooks.for_case(twice, "/hooks/cable")) == 2
    assert len({h["delivery"] for h in hooks.for_case(twice, "/hooks/cable")}) == 1
    # the resent one is recorded as delivered (its done marker written): no third send can follow
    assert wait_for(lambda: logged(stack, "delivered", once, "webhook"), 30)
    assert len(hooks.for_case(once, "/hooks/power")) == 2
    hooks.release.set()


def test_metrics_show_outcomes_dead_letters_and_queue_depths(stack: dict[str, Any]) -> None:
    import httpx

    url = f"http://127.0.0.1:{stack['env']['NOTIFIER_METRICS_PORT']}/metrics"

    def scrape() -> str:
        text = httpx.get(url, timeout=5).text
        return text if 'gridbus_notifier_queue_messages{queue="notifier.retry.10s"}' in text else ""

    text = wait_for(scrape, 20)
    assert text, "the queue-depth gauge was never set"
    for queue in (
        "notifier.events",
        "notifier.deliveries",
        "notifier.deliveries.dead",
        "notifier.retry.10s",
        "notifier.retry.60s",
        "notifier.retry.300s",
        "notifier.retry.1800s",
    ):
        assert f'gridbus_notifier_queue_messages{{queue="{queue}"}}' in text
    assert "gridbus_notifications_held " in text

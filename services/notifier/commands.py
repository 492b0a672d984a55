"""`gridbus notify test`: send one sample message through a real channel and say what happened.

Like a "test contact point" button: an operator checks a robot URL, a mail relay or an
SMS account before a real case depends on it. Secrets (SMTP password, SMS API key) are
read from the environment or `*_FILE` only, never from the command line, where they
would show in `ps` and the shell history.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from services.notifier.channels import ChannelName, ChannelSettings, DeliveryOutcome, OutgoingMessage, send
from services.notifier.channels.base import describe_target
from services.notifier.render import EVENTS, Renderer

COMMANDS: list[click.Command] = []


def sample_context(now: datetime | None = None) -> dict[str, Any]:
    """A believable case (pilot community 辰山社区), clearly marked as a test."""
    now = now or datetime.now(timezone.utc)
    return {
        "case_id": "450305-TEST-000001",
        "event_id": "test",
        "severity": "normal",
        "category": "01037",
        "category_name": "路灯",
        "street": "450305003",
        "street_name": "穿山街道",
        "community_name": "辰山社区",
        "patch_name": "辰山社区第1网格",
        "address": "七星区穿山路12号（测试）",
        "description": "【测试消息】这是一条 gridbus 通知渠道测试，无需处置。",
        "dept": "lighting",
        "dept_name": "照明",
        "ack_due": now + timedelta(hours=2),
        "handle_due": now + timedelta(hours=24),
        "deadline": now + timedelta(hours=2),
        "deadline_kind": "acknowledge",
        "late_seconds": 1800,
        "from_level": 5,
        "to_level": 4,
        "reason": "测试",
        "from_status": "in_progress",
        "to_status": "resolved",
        "mode": "service",
        "items": [{"case_id": "450305-TEST-000001", "subject": "【测试】路灯"}],
    }


def _parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--sms-param")
        params[key] = value
    return params


def describe(outcome: DeliveryOutcome) -> str:
    if outcome.ok:
        return "delivered"
    if outcome.transient:
        wait = f", retry after {outcome.retry_after:g}s" if outcome.retry_after is not None else ""
        return f"FAILED (transient: the notifier would retry{wait})"
    return "FAILED (permanent: the notifier would dead-letter it)"


@click.group("notify")
def notify() -> None:
    """Notification channels."""


@notify.command("test")
@click.option("--channel", "channel", type=click.Choice([c.value for c in ChannelName]), required=True)
@click.option("--to", "to", required=True, help="Webhook/robot URL, e-mail address or mobile number.")
@click.option("--secret", default=None, help="Webhook HMAC secret or DingTalk 加签 secret (SEC…).")
@click.option("--event", type=click.Choice(EVENTS), default="case_dispatched", show_default=True)
@click.option("--mention", "mentions", multiple=True, help="Phone or user id to @ (robots); repeatable.")
@click.option(
    "--templates",
    "templates",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Template override directory (default: <config dir>/notify_templates).",
)
@click.option("--smtp-host", default=None)
@click.option("--smtp-port", type=int, default=None)
@click.option("--smtp-starttls/--no-smtp-starttls", default=None)
@click.option("--smtp-ssl/--no-smtp-ssl", default=None, help="Implicit TLS (port 465).")
@click.option("--smtp-ca-file", default=None, help="CA bundle to trust for the mail relay.")
@click.option("--smtp-user", default=None, help="Password from GRIDBUS_SMTP_PASSWORD(_FILE).")
@click.option("--mail-from", default=None)
@click.option("--sms-url", default=None, help="Provider endpoint; API key from GRIDBUS_SMS_API_KEY(_FILE).")
@click.option("--sms-sign", default=None)
@click.option("--sms-template", default=None, envvar="GRIDBUS_SMS_TEST_TEMPLATE", help="Approved template id.")
@click.option("--sms-param", "sms_param", multiple=True, help="key=value; default: case_id, category, place, deadline.")
@click.option("--timeout", type=float, default=None)
def notify_test(
    channel: str,
    to: str,
    secret: str | None,
    event: str,
    mentions: tuple[str, ...],
    templates: Path | None,
    sms_template: str | None,
    sms_param: tuple[str, ...],
    **setting_overrides: Any,
) -> None:
    """Send one sample message through CHANNEL to --to and print the outcome (exit 1 on failure)."""
    import structlog

    from shared.logs import configure_logging

    # The outcome printed below says it all: keep per-attempt log lines off stdout,
    # unless the caller (a test harness, a wrapper) already chose a logging setup.
    quieted = not structlog.is_configured()
    if quieted:
        configure_logging(level="WARNING")
    try:
        _notify_test(channel, to, secret, event, mentions, templates, sms_template, sms_param, setting_overrides)
    finally:
        if quieted:
            structlog.reset_defaults()


def _notify_test(
    channel: str,
    to: str,
    secret: str | None,
    event: str,
    mentions: tuple[str, ...],
    templates: Path | None,
    sms_template: str | None,
    sms_param: tuple[str, ...],
    setting_overrides: dict[str, Any],
) -> None:
    from shared.config import Settings, get_settings

    # read now (not the process's cached settings): the command's environment is the one that counts
    settings = ChannelSettings.from_settings(Settings(), **setting_overrides)
    renderer = Renderer(templates or get_settings().config_dir / "notify_templates")
    context = sample_context()
    name = ChannelName(channel)
    subject, text = renderer.render(event, name, context)
    message = OutgoingMessage(
        delivery_id=f"test-{uuid.uuid4().hex[:16]}",
        channel=name,
        to=to,
        subject=subject,
        text=text,
        payload={"event": event, "case_id": context["case_id"], "test": True},
        mentions=mentions,
        secret=secret,
        sms_template=sms_template,
        sms_params=_parse_params(sms_param) if sms_param else renderer.sms_params(context),
    )
    outcome = send(message, settings)
    click.echo(f"channel:     {name.value}")
    click.echo(f"to:          {describe_target(to)}")
    click.echo(f"delivery id: {message.delivery_id}")
    click.echo(f"outcome:     {describe(outcome)}")
    click.echo(f"status:      {outcome.status if outcome.status is not None else '-'}")
    click.echo(f"detail:      {outcome.detail}")
    if not outcome.ok:
        raise SystemExit(1)


COMMANDS.append(notify)


@click.command("sink")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8025, show_default=True)
@click.option(
    "--print-env", is_flag=True, help="Only print the `export` lines that point a stack's channels here (for `eval`)."
)
def sink(host: str, port: int, print_env: bool) -> None:
    """A local notification sink: prints every message people would get (webhooks,
    WeCom/DingTalk robots, SMS). Start the stack with the variables it prints."""
    import time as _time

    from services.notifier import sink as sink_mod
    from shared.config import get_settings

    base = f"http://{host}:{port}"
    exports = [f"export {k}='{v}'" for k, v in sink_mod.environment(base).items()]
    if print_env:
        click.echo("\n".join(exports))
        return
    secret = get_settings().webhook_secret

    def show(r: sink_mod.Received) -> None:
        check = {True: " ✓ signed", False: " ✗ BAD SIGNATURE", None: ""}[r.signed]
        click.echo(f"{_time.strftime('%H:%M:%S')} {r.kind:<8} {r.path}{check}\n    " + r.text.replace("\n", "\n    "))

    try:
        server = sink_mod.serve(host, port, secret, show)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}; try --port") from None
    click.echo(
        f"gridbus sink on {base}. Point a stack at it (before `./run.sh` or `gridbus up`):\n  "
        + "\n  ".join(exports)
        + '\n(or: eval "$(gridbus sink --print-env)"). Ctrl-C stops.'
    )
    try:
        while True:
            _time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


COMMANDS.append(sink)
